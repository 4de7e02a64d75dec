/* Janus and loopback, for the bench's Janus target (bench/src/janus/mod.rs).
 *
 * Janus gathers ICE candidates from getifaddrs(), and leaves out every interface flagged
 * IFF_LOOPBACK before it applies its ice_enforce_list (ice.c, janus_ice_setup_local), so
 * no setting lets it use 127.0.0.1; with nothing allowed, libnice gathers on the machine's
 * other interfaces instead. The bench runs everything on loopback, so it preloads this into
 * Janus: getifaddrs() as libc answers it, without the loopback flag. Nothing else changes.
 *
 * Built by the bench: cc -O2 -shared -fPIC -o unloopback.so unloopback.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>

int getifaddrs(struct ifaddrs **ifap) {
	static int (*libc_getifaddrs)(struct ifaddrs **);
	if (libc_getifaddrs == NULL)
		libc_getifaddrs = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
	if (libc_getifaddrs == NULL)
		return -1;
	int result = libc_getifaddrs(ifap);
	if (result == 0)
		for (struct ifaddrs *i = *ifap; i != NULL; i = i->ifa_next)
			i->ifa_flags &= ~IFF_LOOPBACK;
	return result;
}
