//! `sfu token`: prints a join token signed with the server's secret; `sfu admin token`,
//! an admin token signed with its admin secret.

use anyhow::{anyhow, bail};
use protocol::{Grants, Role};
use signaling::TokenKey;
use signaling::admin::{AdminKey, MAX_ADMIN_TTL};

use crate::cli::{AdminTokenArgs, TokenArgs};
use crate::config;

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let secret = config::secret(args.secret, args.secret_file.as_deref(), "secret")?
        .ok_or_else(|| anyhow!("no --secret and no --secret-file: the server's is needed"))?;
    let mut claims = TokenKey::claims(&args.room, &args.identity, args.name.as_deref(), args.ttl);
    if let Some(list) = args.grants {
        let mut grants = Grants {
            publish_audio: false,
            publish_video: false,
            publish_screen: false,
            subscribe: false,
            force_tcp: false,
            plaintext: false,
            role: Role::Participant,
        };
        for g in list.iter().map(|g| g.trim()).filter(|g| !g.is_empty()) {
            match g {
                "publish_audio" => grants.publish_audio = true,
                "publish_video" => grants.publish_video = true,
                "publish_screen" => grants.publish_screen = true,
                "subscribe" => grants.subscribe = true,
                "plaintext" => grants.plaintext = true,
                other => bail!("unknown grant {other:?}"),
            }
        }
        claims.grants = grants;
    }
    claims.grants.force_tcp = args.force_tcp;
    claims.grants.role = args.role;
    if let Some(group) = &args.group
        && !protocol::policy::valid_group_name(group)
    {
        bail!("--group: {group:?} is not 1 to 64 letters, digits, '-', '_' or '.'");
    }
    claims.group = args.group;
    let token = TokenKey::new(secret.as_bytes()).issue(&claims)?;
    println!("{token}");
    Ok(())
}

pub fn admin(args: AdminTokenArgs) -> anyhow::Result<()> {
    let secret =
        config::secret(args.secret, args.secret_file.as_deref(), "secret")?.ok_or_else(|| {
            anyhow!("no --secret and no --secret-file: the server's admin secret is needed")
        })?;
    if args.ttl > MAX_ADMIN_TTL {
        bail!("--ttl: an admin token lives 30 days at most (the server refuses longer ones)");
    }
    let claims = AdminKey::claims(&args.identity, args.ttl);
    println!("{}", AdminKey::new(secret.as_bytes()).issue(&claims)?);
    Ok(())
}
