#!/usr/bin/env python3
"""A receive-only call participant built on aiortc, speaking the server's own signaling.

aiortc (PyPI `aiortc`) is a WebRTC stack not written here, and one that estimates
bandwidth with REMB only (no transport-wide congestion control): the kind of receiver
the server must adapt to from REMB reports alone. This script does what a small aiortc
application would: it opens the WebSocket, sends `join`, subscribes to every track the
room has (one receive-only m-line each, offered by us, answered by the server:
docs/protocol.md), follows `track_published` / `track_unpublished` with new offers, and
decodes what arrives (aiortc's VP8/H.264/Opus decoders; `track.recv()` returns decoded
frames, which is what is counted). It publishes nothing.

    aiortc_receiver.py ws://10.77.0.1:8080/ws TOKEN --seconds 30 [--log FILE]

Prints one JSON object per line on stdout: `joined`, `answer` (with the header
extensions and RTCP feedback the server answered), `connection`, `track` (a remote track
appeared on an m-line), `first_frame` (ms from the WebSocket's opening to a track's first
decoded frame), `stats` once a second (frames decoded in that second per m-line, the
REMB reports aiortc sent in it and their sum over m-lines), and `done` at the end: per
m-line the frames decoded, the first frame's time, the longest gap without a new
decoded frame (from the first frame to the end of the run, so a picture that stops for
good counts too) and aiortc's RTP statistics, and the REMB summary. `--log` writes
aiortc's debug log (every RTP and RTCP packet, ICE) to a file. Exit status 0 when the signaling and the run went through (the caller
judges the media), 1 otherwise (refused join, no answer, the server removed us...), the
reason in `done.error`; 2 for bad arguments. The whole run is bounded: `--seconds` of
media after joining, plus at most about 45 s of setup and teardown.

End-to-end encryption: rooms require it unless the token has the `plaintext` grant (the
server's `may_join_in_clear`). aiortc cannot encrypt or decrypt SFrame (there is no
encoded-transform hook), so this client joins with `e2ee: false`, which needs a token
that either grants no publishing or has `plaintext`; and it can decode only what its
publishers send in the clear (demo page `?e2ee=0`, whose tokens have `plaintext` too).
e2e/aiortc.test.mjs gives it a participant's token (it may publish, so the server keeps
a REMB estimate for it, as for any aiortc application in a call) with `plaintext`.
"""

import argparse
import asyncio
import json
import logging
import sys
import time

try:
    import aiortc.rtcrtpreceiver as aiortc_receiver
    from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
    from aiortc.sdp import candidate_from_sdp
    from websockets.asyncio.client import connect
except ImportError as err:  # pragma: no cover - the environment's business
    print(json.dumps({"event": "done", "ok": False, "error": f"missing Python package: {err} "
                      "(scripts/test installs e2e/requirements.txt into e2e/.venv)"}), flush=True)
    sys.exit(1)

JOIN_TIMEOUT_S = 15
ANSWER_TIMEOUT_S = 20
LEAVE_TIMEOUT_S = 3
CLOSE_TIMEOUT_S = 5
# Setup and teardown beyond --seconds: the hard bound of the whole run.
SLACK_S = JOIN_TIMEOUT_S + ANSWER_TIMEOUT_S + LEAVE_TIMEOUT_S + CLOSE_TIMEOUT_S + 2


def say(**fields):
    print(json.dumps(fields), flush=True)


class Failure(Exception):
    """The run cannot go on: the server refused or removed us, or stopped answering."""


class Remb:
    """The REMB reports aiortc sends (observed, not changed).

    aiortc keeps one estimator per receiving video m-line, each reporting what it
    estimates for its own stream, and packs every report through
    `aiortc.rtcrtpreceiver.pack_remb_fci`, which this wraps. `sum_bps` adds each
    stream's latest report of the last 3 s: the link as the reports add up.
    """

    FRESH_S = 3

    def __init__(self):
        self.count = 0
        self.first_at = None
        self.min_bps = None
        self.max_bps = None
        self.in_second = 0
        # The media SSRCs a report is about -> (its bitrate, when).
        self.latest = {}
        pack = aiortc_receiver.pack_remb_fci

        def counting(bitrate, ssrcs):
            now = time.monotonic()
            self.count += 1
            self.in_second += 1
            self.first_at = self.first_at or now
            self.min_bps = bitrate if self.min_bps is None else min(self.min_bps, bitrate)
            self.max_bps = bitrate if self.max_bps is None else max(self.max_bps, bitrate)
            self.latest[tuple(ssrcs)] = (bitrate, now)
            return pack(bitrate, ssrcs)

        aiortc_receiver.pack_remb_fci = counting

    def sum_bps(self):
        now = time.monotonic()
        fresh = [bps for bps, at in self.latest.values() if now - at < self.FRESH_S]
        return sum(fresh) if fresh else None

    def take_second(self):
        """The reports of the last second and the sum now; starts a new second."""
        count, self.in_second = self.in_second, 0
        return {"count": count, "sum_bps": self.sum_bps()}

    def summary(self, ms):
        return {"count": self.count, "first_ms": None if self.first_at is None else ms(self.first_at),
                "min_bps": self.min_bps, "max_bps": self.max_bps, "last_sum_bps": self.sum_bps()}


class Line:
    """One receiving m-line: the track it carries and what was decoded from it."""

    def __init__(self, transceiver, kind):
        self.transceiver = transceiver
        self.kind = kind
        # The track it subscribes now (None: free, left out of `subscribe`, reusable).
        self.track_id = None
        # Frames decoded: in all, and in the current second (for `stats`).
        self.frames = 0
        self.second = 0
        # When (time.monotonic()) the first and the latest frame were decoded, and the
        # longest time between two, in seconds.
        self.first_at = None
        self.last_at = None
        self.longest_gap_s = 0.0
        # The latest video frame's [width, height].
        self.size = None
        # The task that takes its frames from aiortc (which queues them unboundedly).
        self.consumer = None

    def on_frame(self, now, frame):
        if self.first_at is None:
            self.first_at = now
        elif self.last_at is not None:
            self.longest_gap_s = max(self.longest_gap_s, now - self.last_at)
        self.last_at = now
        self.frames += 1
        self.second += 1
        if self.kind == "video":
            self.size = [frame.width, frame.height]


class Receiver:
    """A participant that joins, subscribes to every track in the room, and decodes."""

    def __init__(self, url, token, seconds):
        self.url = url
        self.token = token
        self.seconds = seconds
        # No STUN or TURN server: the server is reached directly (aiortc would otherwise
        # ask Google's STUN server); one transport for every m-line, as the server wants.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.remb = Remb()
        self.ws = None
        # When the WebSocket opened (every `ms` counts from there) and when the run ended.
        self.opened_at = None
        self.ended_at = None
        # track_id -> the track object of `joined` / `track_published`: what to receive.
        self.tracks = {}
        # participant_id -> name, for the report.
        self.names = {}
        # The receiving m-lines, in the order of the offer.
        self.lines = []
        # Set when what to receive changed: the negotiation makes the next offer.
        self.wanted = asyncio.Event()
        # The offer in flight's reply (an `answer`, or an `error` for the offer).
        self.reply = None
        # Why the run must end early (the server removed us, closed the socket).
        self.failure = None
        self.answers = 0
        # The server's latest errors (at most 20) that answered nothing we waited for.
        self.errors = []

        @self.pc.on("connectionstatechange")
        def on_state():
            say(event="connection", state=self.pc.connectionState, ms=self.ms())

        @self.pc.on("track")
        def on_track(track):
            line = next((l for l in self.lines if l.transceiver.receiver.track is track), None)
            if line is None:
                return
            info = self.tracks.get(line.track_id, {})
            say(event="track", mid=line.transceiver.mid, kind=track.kind, track_id=line.track_id,
                participant_id=info.get("participant_id"), source=info.get("source"), ms=self.ms())
            line.consumer = asyncio.ensure_future(self.consume(line, track))

    def ms(self, at=None):
        """Milliseconds from the WebSocket's opening to `at` (default: now)."""
        at = time.monotonic() if at is None else at
        return None if self.opened_at is None else round((at - self.opened_at) * 1000)

    async def consume(self, line, track):
        """Decodes `track` until it ends, counting frames (needed: aiortc queues them)."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            first = line.first_at is None
            line.on_frame(now, frame)
            if first:
                info = self.tracks.get(line.track_id, {})
                say(event="first_frame", mid=line.transceiver.mid, kind=line.kind, track_id=line.track_id,
                    participant_id=info.get("participant_id"), source=info.get("source"), ms=self.ms(now),
                    size=line.size)

    # -- signaling -----------------------------------------------------------------------

    async def send(self, message):
        await self.ws.send(json.dumps(message))

    async def join(self):
        await self.send({"type": "join", "token": self.token, "transport": "auto", "e2ee": False})
        raw = await asyncio.wait_for(self.ws.recv(), JOIN_TIMEOUT_S)
        msg = json.loads(raw)
        if msg.get("type") != "joined":
            raise Failure(f"join refused: {raw}")
        for p in msg.get("participants", []):
            self.names[p["participant_id"]] = p.get("name") or p.get("identity")
        for t in msg.get("tracks", []):
            self.tracks[t["track_id"]] = t
        say(event="joined", participant_id=msg.get("participant_id"), ms=self.ms(),
            participants=len(self.names), tracks=len(self.tracks), grants=msg.get("grants"))
        self.wanted.set()

    async def read(self):
        """Reads the server's messages until the socket closes; routes offer replies."""
        async for raw in self.ws:
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "track_published":
                self.tracks[msg["track_id"]] = msg
                self.wanted.set()
            elif kind == "track_unpublished":
                self.tracks.pop(msg["track_id"], None)
                self.wanted.set()
            elif kind == "participant_joined":
                self.names[msg["participant_id"]] = msg.get("name") or msg.get("identity")
            elif kind == "resync":
                self.tracks = {t["track_id"]: t for t in msg.get("tracks", [])}
                self.names = {p["participant_id"]: p.get("name") or p.get("identity") for p in msg.get("participants", [])}
                self.wanted.set()
            elif kind == "answer" or (kind == "error" and msg.get("request") == "offer"):
                if self.reply is not None and not self.reply.done():
                    self.reply.set_result(msg)
                else:
                    self.errors = [*self.errors[-19:], {"unexpected": msg}]
            elif kind == "left":
                self.failure = f"the server removed us: {raw}"
                return
            elif kind == "error":
                self.errors = [*self.errors[-19:], msg]
                say(event="server_error", message=msg)
        if self.failure is None:
            self.failure = "the server closed the socket"

    async def negotiate(self):
        """One offer at a time, whenever the tracks to receive changed."""
        while True:
            await self.wanted.wait()
            self.wanted.clear()
            await self.offer_once()

    async def offer_once(self):
        # Every video and audio track of the room on an m-line: a free m-line of its kind
        # is reused (the server continues the stream), else a new one is added.
        for line in self.lines:
            if line.track_id is not None and line.track_id not in self.tracks:
                line.track_id = None
        carried = {line.track_id for line in self.lines}
        for track_id, t in sorted(self.tracks.items()):
            if track_id in carried or t.get("kind") not in ("audio", "video"):
                continue
            line = next((l for l in self.lines if l.track_id is None and l.kind == t["kind"]), None)
            if line is None:
                line = Line(self.pc.addTransceiver(t["kind"], direction="recvonly"), t["kind"])
                self.lines.append(line)
            line.track_id = track_id
        if not self.lines:
            return  # an empty room: nothing to offer yet
        # aiortc gathers every candidate here (no trickle), then the mids are known.
        await self.pc.setLocalDescription(await self.pc.createOffer())
        subscribe = [{"mid": l.transceiver.mid, "track_id": l.track_id} for l in self.lines if l.track_id is not None]
        self.reply = asyncio.get_running_loop().create_future()
        await self.send({"type": "offer", "sdp": self.pc.localDescription.sdp, "publish": [], "subscribe": subscribe})
        try:
            reply = await asyncio.wait_for(self.reply, ANSWER_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise Failure(f"no answer to the offer within {ANSWER_TIMEOUT_S} s") from None
        if reply.get("type") != "answer":
            raise Failure(f"offer refused: {json.dumps(reply)}")
        sdp = reply["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self.add_candidates(sdp)
        self.answers += 1
        say(event="answer", ms=self.ms(), subscribed=subscribe,
            extensions=sorted({l.split(" ", 1)[1] for l in sdp.splitlines() if l.startswith("a=extmap:")}),
            feedback=sorted({l.split(" ", 1)[1] for l in sdp.splitlines() if l.startswith("a=rtcp-fb:")}))

    async def add_candidates(self, sdp):
        """Gives aiortc the answer's candidates itself, then says there are no more.

        The server puts its candidates (all of them: it is ICE-lite and never trickles)
        only in the answer's first m-line, the BUNDLE tag, as RFC 8843 lets it. aiortc
        takes the remote candidates of a bundled transport from the last m-line of the
        bundle instead (setRemoteDescription keeps one m-line per transport, the last),
        finds none there, and waits for candidates forever: no ICE check is ever sent.
        Added again here for the first m-line (ignored once ICE has them all).
        """
        index = -1
        for line in sdp.splitlines():
            if line.startswith("m="):
                index += 1
            elif line.startswith("a=candidate:") and index >= 0:
                candidate = candidate_from_sdp(line[len("a=candidate:"):])
                candidate.sdpMLineIndex = index  # its m-line (its a=mid may come later)
                await self.pc.addIceCandidate(candidate)
        await self.pc.addIceCandidate(None)

    async def tick(self):
        """Prints frames decoded per second and the REMB reports of that second."""
        t = 0
        while True:
            await asyncio.sleep(1)
            t += 1
            frames = {}
            for l in self.lines:
                frames[l.transceiver.mid or "?"] = l.second
                l.second = 0
            say(event="stats", t=t, frames=frames, remb=self.remb.take_second())

    # -- running -------------------------------------------------------------------------

    async def run(self):
        async with connect(self.url, open_timeout=10, max_size=4 << 20) as ws:
            self.ws = ws
            self.opened_at = time.monotonic()
            await self.join()
            reader = asyncio.ensure_future(self.read())
            tasks = [reader, asyncio.ensure_future(self.negotiate()), asyncio.ensure_future(self.tick())]
            try:
                # The run's length, cut short when the reader or the negotiation ends.
                done, _ = await asyncio.wait(tasks, timeout=self.seconds, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()
                if self.failure is not None:
                    raise Failure(self.failure)
                self.ended_at = time.monotonic()
                try:
                    await self.send({"type": "leave"})
                    await asyncio.wait_for(reader, LEAVE_TIMEOUT_S)
                except Exception:  # noqa: BLE001 - leaving is best effort (a timeout, a closed socket)
                    pass
            finally:
                for task in tasks:
                    task.cancel()

    async def close(self):
        for line in self.lines:
            if line.consumer is not None:
                line.consumer.cancel()
        try:
            await asyncio.wait_for(self.pc.close(), CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            pass

    async def report(self):
        """Per m-line: the track, frames decoded, first frame, longest gap; RTP stats."""
        end = self.ended_at or time.monotonic()
        out = []
        for l in self.lines:
            info = self.tracks.get(l.track_id, {})
            gap = None
            if l.first_at is not None:
                # Up to the end of the run: a picture that stopped for good is a gap too.
                gap = round(max(l.longest_gap_s, end - l.last_at) * 1000)
            out.append({
                "mid": l.transceiver.mid, "kind": l.kind, "track_id": l.track_id,
                "participant_id": info.get("participant_id"), "name": self.names.get(info.get("participant_id")),
                "source": info.get("source"), "frames": l.frames,
                "first_frame_ms": None if l.first_at is None else self.ms(l.first_at),
                "longest_gap_ms": gap, "size": l.size, "rtp": await self.rtp_stats(l),
            })
        return out

    async def rtp_stats(self, line):
        try:
            stats = await line.transceiver.receiver.getStats()
        except Exception:  # noqa: BLE001 - statistics are extra
            return None
        for s in stats.values():
            if s.type == "inbound-rtp":
                return {"packets": s.packetsReceived, "lost": s.packetsLost, "jitter": s.jitter}
        return None


async def main_async(args):
    receiver = Receiver(args.url, args.token, args.seconds)
    error = None
    try:
        await asyncio.wait_for(receiver.run(), args.seconds + SLACK_S)
    except Failure as err:
        error = str(err)
    except asyncio.TimeoutError:
        error = f"the run did not end within {args.seconds + SLACK_S} s"
    except Exception as err:  # noqa: BLE001 - reported, then a clean exit
        error = f"{type(err).__name__}: {err}"
    tracks = await receiver.report()
    await receiver.close()
    say(event="done", ok=error is None, error=error, seconds=args.seconds, answers=receiver.answers,
        tracks=tracks, remb=receiver.remb.summary(receiver.ms), server_errors=receiver.errors[-5:])
    return 0 if error is None else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server's WebSocket, e.g. ws://10.77.0.1:8080/ws")
    parser.add_argument("token", help="a join token (JWT) for the room")
    parser.add_argument("--seconds", type=float, default=30, help="how long to receive after joining")
    parser.add_argument("--log", metavar="FILE", help="write aiortc's (and websockets') debug log to FILE")
    args = parser.parse_args()
    if args.log:
        logging.basicConfig(level=logging.DEBUG, filename=args.log, filemode="w")
    else:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
