#!/usr/bin/python3
"""A WHIP publisher or WHEP viewer built on GStreamer's webrtcbin (Debian's packages).

The WebRTC side (ICE with libnice, DTLS, SRTP, RTP, VP8 and Opus) is GStreamer's; this
script only does the HTTP exchange of RFC 9725 around it, as OBS or `whipsink` would:

    gst_whip.py whip URL TOKEN --seconds 20     # publishes a test pattern and a tone
    gst_whip.py whep URL TOKEN --seconds 20     # watches, decodes, counts frames

It prints one JSON object per second ({"event": "stats", ...}) and one at the end
({"event": "done", ...}); the HTTP answers it got are printed too ({"event": "http"}).
Exit status 0 when the exchange succeeded (the caller judges the media), 1 otherwise.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VP8_CAPS = "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
OPUS_CAPS = "application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000,encoding-params=(string)2"


def say(**fields):
    print(json.dumps(fields), flush=True)


def ecdsa_pem():
    """A self-signed ECDSA P-256 certificate and its key, in one PEM string, and the
    certificate's SHA-256 fingerprint (`AB:CD:…`).

    webrtcbin makes an RSA certificate for DTLS; the server's DTLS (str0m's dimpl) speaks
    ECDSA only, as browsers, OBS (libdatachannel), Pion and ffmpeg do.
    """
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=gst-whip", "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem"],
            check=True, capture_output=True,
        )
        fingerprint = subprocess.run(
            ["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", f"{d}/cert.pem"],
            check=True, capture_output=True, text=True,
        ).stdout.strip().split("=", 1)[1]
        return open(f"{d}/cert.pem").read() + open(f"{d}/key.pem").read(), fingerprint


class Client:
    def __init__(self, mode, url, token, seconds, width, height, verbose, ecdsa):
        self.verbose = verbose
        self.mode = mode
        self.url = url
        self.token = token
        self.seconds = seconds
        self.loop = GLib.MainLoop()
        self.location = None
        self.ok = False
        self.video_frames = 0
        self.audio_buffers = 0
        self.size = None
        self.started = time.monotonic()
        self.connected_at = None
        self.first_frame_at = None
        if mode == "whip":
            self.pipe = Gst.parse_launch(
                "webrtcbin name=w bundle-policy=max-bundle "
                f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=15/1 "
                "! videoconvert ! vp8enc deadline=1 target-bitrate=600000 keyframe-max-dist=30 cpu-used=8 "
                f"! rtpvp8pay pt=96 picture-id-mode=15-bit ! {VP8_CAPS} ! w. "
                "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample "
                f"! opusenc ! rtpopuspay pt=111 ! {OPUS_CAPS} ! w."
            )
        else:
            self.pipe = Gst.Pipeline.new("whep")
            webrtc = Gst.ElementFactory.make("webrtcbin", "w")
            webrtc.set_property("bundle-policy", "max-bundle")
            self.pipe.add(webrtc)
        self.webrtc = self.pipe.get_by_name("w")
        # libnice keeps the pair alive with binding indications unless told to use
        # requests; an ICE-lite server sees only requests (consent, RFC 7675).
        self.ice = self.webrtc.get_property("ice-agent")
        self.agent = self.ice.get_property("agent")
        self.agent.set_property("keepalive-conncheck", True)
        self.fingerprint = None
        if ecdsa:
            pem, self.fingerprint = ecdsa_pem()

            def on_element(_bin, _sub, element):
                if element.find_property("pem") is not None and element.get_factory().get_name() == "dtlssrtpdec":
                    element.set_property("pem", pem)

            self.webrtc.connect("deep-element-added", on_element)
        if mode == "whep":
            for caps in (VP8_CAPS, OPUS_CAPS):
                self.webrtc.emit(
                    "add-transceiver",
                    GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                    Gst.Caps.from_string(caps),
                )
            self.webrtc.connect("pad-added", self.on_pad_added)
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering)
        self.webrtc.connect("notify::ice-connection-state", self.on_ice_state)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_error)

    # -- signalling ------------------------------------------------------------------

    def on_negotiation_needed(self, webrtc):
        if self.mode == "whip":
            for i in range(16):
                t = webrtc.emit("get-transceiver", i)
                if t is None:
                    break
                t.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        promise = Gst.Promise.new_with_change_func(self.on_offer, webrtc, None)
        webrtc.emit("create-offer", None, promise)

    def on_offer(self, promise, webrtc, _):
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering(self, webrtc, _pspec):
        # Candidates go in the offer (no trickle): post once gathering is complete.
        if webrtc.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            sdp = webrtc.get_property("local-description").sdp.as_text()
            threading.Thread(target=self.post, args=(sdp,), daemon=True).start()

    def request(self, method, url, body=None, content_type=None):
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as res:
                return res.status, res.headers, res.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def post(self, sdp):
        if self.fingerprint:
            # webrtcbin put the fingerprint of the certificate it made, not of ours.
            sdp = "\r\n".join(
                f"a=fingerprint:sha-256 {self.fingerprint}" if line.startswith("a=fingerprint:") else line
                for line in sdp.split("\r\n")
            )
        if self.verbose:
            say(event="offer", sdp=sdp)
        # A server of a cluster may send the offer to the node that hosts the room: 307
        # (or 308) with its endpoint, where the same POST goes (RFC 9725, section 4.5).
        for _ in range(4):
            status, headers, body = self.request("POST", self.url, sdp.encode(), "application/sdp")
            if status not in (307, 308) or not headers.get("Location"):
                break
            self.url = urllib.parse.urljoin(self.url, headers.get("Location"))
            say(event="redirect", status=status, location=self.url)
        say(event="http", method="POST", status=status, location=headers.get("Location"),
            etag=headers.get("ETag"), content_type=headers.get("Content-Type"),
            body=body if status != 201 else None)
        if status != 201:
            GLib.idle_add(self.loop.quit)
            return
        self.location = urllib.parse.urljoin(self.url, headers.get("Location"))
        self.etag = headers.get("ETag")
        GLib.idle_add(self.apply_answer, body)

    def apply_answer(self, text):
        res, msg = GstSdp.SDPMessage.new_from_text(text)
        if res != GstSdp.SDPResult.OK:
            say(event="error", message="unparsable answer")
            self.loop.quit()
            return False
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, msg)
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        self.ok = True
        if self.verbose:
            say(event="answer", sdp=text)
        return False

    def on_ice_state(self, webrtc, _pspec):
        state = webrtc.get_property("ice-connection-state")
        if state in (GstWebRTC.WebRTCICEConnectionState.CONNECTED,
                     GstWebRTC.WebRTCICEConnectionState.COMPLETED) and self.connected_at is None:
            self.connected_at = time.monotonic()
        say(event="ice", state=state.value_nick, t=round(time.monotonic() - self.started, 1))

    # -- media (WHEP) ------------------------------------------------------------------

    def on_pad_added(self, _webrtc, pad):
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decode = Gst.ElementFactory.make("decodebin")
        decode.connect("pad-added", self.on_decoded_pad)
        self.pipe.add(decode)
        decode.sync_state_with_parent()
        pad.link(decode.get_static_pad("sink"))

    def on_decoded_pad(self, _decode, pad):
        caps = pad.get_current_caps() or pad.query_caps(None)
        video = caps.to_string().startswith("video")
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        self.pipe.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        pad.add_probe(Gst.PadProbeType.BUFFER, self.on_video if video else self.on_audio)

    def on_video(self, pad, _info):
        self.video_frames += 1
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()
        caps = pad.get_current_caps()
        if caps:
            s = caps.get_structure(0)
            self.size = [s.get_value("width"), s.get_value("height")]
        return Gst.PadProbeReturn.OK

    def on_audio(self, _pad, _info):
        self.audio_buffers += 1
        return Gst.PadProbeReturn.OK

    # -- running ---------------------------------------------------------------------

    def on_error(self, _bus, message):
        err, debug = message.parse_error()
        say(event="error", message=str(err), debug=debug)
        self.ok = False
        self.loop.quit()

    def tick(self):
        say(event="stats", t=round(time.monotonic() - self.started, 1),
            video_frames=self.video_frames, audio_buffers=self.audio_buffers, size=self.size)
        if time.monotonic() - self.started >= self.seconds:
            self.loop.quit()
            return False
        return True

    def run(self):
        self.pipe.set_state(Gst.State.PLAYING)
        GLib.timeout_add(1000, self.tick)
        self.loop.run()
        deleted = None
        if self.location:
            deleted, _, _ = self.request("DELETE", self.location)
        self.pipe.set_state(Gst.State.NULL)
        ms = lambda t: None if t is None else round((t - self.started) * 1000)  # noqa: E731
        say(event="done", ok=self.ok, location=self.location, delete_status=deleted,
            video_frames=self.video_frames, audio_buffers=self.audio_buffers, size=self.size,
            connected_ms=ms(self.connected_at), first_frame_ms=ms(self.first_frame_at))
        return 0 if self.ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["whip", "whep"])
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--verbose", action="store_true", help="print the offer and answer")
    parser.add_argument("--rsa", action="store_true", help="keep webrtcbin's own RSA certificate")
    args = parser.parse_args()
    Gst.init(None)
    client = Client(args.mode, args.url, args.token, args.seconds, args.width, args.height, args.verbose, not args.rsa)
    sys.exit(client.run())


if __name__ == "__main__":
    main()
