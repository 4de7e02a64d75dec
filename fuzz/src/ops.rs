//! The structured inputs of the targets that take them: heads decoded with `arbitrary`
//! (derived), each followed by its raw chunks (see [`crate::input`]), and their encoding
//! for the seed generator.

use arbitrary::Arbitrary;

use crate::input::{Encode, Writer};

/// One step of `turn_session`; the chunk after it is what its doc says.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub enum TurnOp {
    /// A message (the chunk) from a client, as the driver hands it over: a datagram, or one
    /// frame of a stream.
    Raw { client: u8 },
    /// Bytes (the chunk) on a stream client's connection, cut into messages as the
    /// driver's reader cuts them (`turn::driver::frame_len`).
    Stream { client: u8 },
    /// A request of `method` with the attributes in the chunk (see
    /// [`crate::relay::attributes`]), signed as user `user` with the client's nonce.
    Signed {
        client: u8,
        method: TurnMethod,
        user: u8,
        sha256: bool,
    },
    /// A datagram (the chunk) from peer `peer` to relay address `relay`.
    Peer { relay: u8, peer: u8 },
    /// Seconds pass; the core expires what is due.
    Wait { seconds: u16 },
    /// A stream client's connection closes.
    Close { client: u8 },
}

/// The methods a signed request may have.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
pub enum TurnMethod {
    Binding,
    Allocate,
    Refresh,
    CreatePermission,
    ChannelBind,
    Send,
    Data,
    /// Any method number (12 bits).
    Other(u16),
}

impl TurnMethod {
    pub fn method(self) -> stun_types::message::Method {
        use stun_types::message::{BINDING, Method};
        use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
        match self {
            TurnMethod::Binding => BINDING,
            TurnMethod::Allocate => ALLOCATE,
            TurnMethod::Refresh => REFRESH,
            TurnMethod::CreatePermission => CREATE_PERMISSION,
            TurnMethod::ChannelBind => CHANNEL_BIND,
            TurnMethod::Send => SEND,
            TurnMethod::Data => DATA,
            TurnMethod::Other(m) => Method::new(m & 0x0fff),
        }
    }
}

impl Encode for TurnOp {
    fn encode(&self, w: &mut Writer) {
        match self {
            TurnOp::Raw { client } => {
                w.variant(0, 6);
                w.u8(*client);
            }
            TurnOp::Stream { client } => {
                w.variant(1, 6);
                w.u8(*client);
            }
            TurnOp::Signed {
                client,
                method,
                user,
                sha256,
            } => {
                w.variant(2, 6);
                w.u8(*client);
                method.encode(w);
                w.u8(*user);
                w.bool(*sha256);
            }
            TurnOp::Peer { relay, peer } => {
                w.variant(3, 6);
                w.u8(*relay);
                w.u8(*peer);
            }
            TurnOp::Wait { seconds } => {
                w.variant(4, 6);
                w.u16(*seconds);
            }
            TurnOp::Close { client } => {
                w.variant(5, 6);
                w.u8(*client);
            }
        }
    }
}

impl Encode for TurnMethod {
    fn encode(&self, w: &mut Writer) {
        let index = match self {
            TurnMethod::Binding => 0,
            TurnMethod::Allocate => 1,
            TurnMethod::Refresh => 2,
            TurnMethod::CreatePermission => 3,
            TurnMethod::ChannelBind => 4,
            TurnMethod::Send => 5,
            TurnMethod::Data => 6,
            TurnMethod::Other(_) => 7,
        };
        w.variant(index, 8);
        if let TurnMethod::Other(m) = self {
            w.u16(*m);
        }
    }
}

/// An offer's lists for `shard_offer`, aimed at the SDP (a chunk) that follows: the
/// grants of the participant that offers (on its first offer), what it publishes,
/// subscribes and receives on slots.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub struct OfferShape {
    pub grants: GrantsShape,
    pub publish: Vec<PublishShape>,
    pub subscribe: Vec<SubscribeShape>,
    pub slots: Vec<Named>,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
pub struct GrantsShape {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
    pub subscribe: bool,
    pub viewer: bool,
}

impl GrantsShape {
    pub const ALL: GrantsShape = GrantsShape {
        audio: true,
        video: true,
        screen: true,
        subscribe: true,
        viewer: false,
    };

    pub fn grants(self) -> protocol::Grants {
        protocol::Grants {
            publish_audio: self.audio,
            publish_video: self.video,
            publish_screen: self.screen,
            subscribe: self.subscribe,
            role: if self.viewer {
                protocol::Role::Viewer
            } else {
                protocol::Role::Participant
            },
            ..protocol::Grants::default()
        }
    }
}

/// A published m-line: its mid, its source, its simulcast rids.
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub struct PublishShape {
    pub mid: Named,
    pub source: SourceShape,
    pub layers: Vec<Named>,
}

/// A receiving m-line and the track it asks for (track ids count from 1).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
pub struct SubscribeShape {
    pub mid: Named,
    pub track: u8,
}

/// A mid or rid: the n-th of those in the SDP, or one it does not have.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
pub enum Named {
    Nth(u8),
    Absent(u8),
}

impl Named {
    /// The name among `names` (those of the SDP).
    pub fn resolve(self, names: &[&str]) -> String {
        match self {
            Named::Nth(n) => crate::sdp::nth(names, n),
            Named::Absent(n) => format!("absent{n}"),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
pub enum SourceShape {
    Microphone,
    Camera,
    Screen,
}

impl SourceShape {
    pub fn source(self) -> protocol::Source {
        match self {
            SourceShape::Microphone => protocol::Source::Microphone,
            SourceShape::Camera => protocol::Source::Camera,
            SourceShape::Screen => protocol::Source::Screen,
        }
    }
}

impl Encode for OfferShape {
    fn encode(&self, w: &mut Writer) {
        self.grants.encode(w);
        w.list(&self.publish);
        w.list(&self.subscribe);
        w.list(&self.slots);
    }
}

impl Encode for GrantsShape {
    fn encode(&self, w: &mut Writer) {
        for b in [
            self.audio,
            self.video,
            self.screen,
            self.subscribe,
            self.viewer,
        ] {
            w.bool(b);
        }
    }
}

impl Encode for PublishShape {
    fn encode(&self, w: &mut Writer) {
        self.mid.encode(w);
        self.source.encode(w);
        w.list(&self.layers);
    }
}

impl Encode for SubscribeShape {
    fn encode(&self, w: &mut Writer) {
        self.mid.encode(w);
        w.u8(self.track);
    }
}

impl Encode for Named {
    fn encode(&self, w: &mut Writer) {
        let (index, n) = match self {
            Named::Nth(n) => (0, n),
            Named::Absent(n) => (1, n),
        };
        w.variant(index, 2);
        w.u8(*n);
    }
}

impl Encode for SourceShape {
    fn encode(&self, w: &mut Writer) {
        let index = match self {
            SourceShape::Microphone => 0,
            SourceShape::Camera => 1,
            SourceShape::Screen => 2,
        };
        w.variant(index, 3);
    }
}

/// One step of `shard_datagram`, on the two-party call of
/// [`Call::two_party`](crate::call::Call::two_party).
#[derive(Arbitrary, Debug, Clone, PartialEq)]
pub enum CallOp {
    /// A datagram (the chunk) from client `peer`'s own address (0: the publisher, on UDP;
    /// 1: the subscriber, on ICE-TCP, a frame without its RFC 4571 length): what its
    /// session demultiplexes (STUN, DTLS, SRTP, SRTCP), or garbage.
    FromPeer { peer: u8 },
    /// A datagram (the chunk) from an address the shard has not mapped: only a STUN
    /// binding request naming a participant's ufrag is taken.
    FromStranger { host: u8, tcp: bool },
    /// The publisher sends an RTP packet through its own session, so that it arrives
    /// encrypted and reaches the forwarding path: with `dd` a chunk with a dependency
    /// descriptor, then a chunk with the payload.
    Rtp(RtpShape),
    /// The subscriber asks for a keyframe of each stream it receives.
    KeyframeRequest { fir: bool },
    /// The subscriber's `view`: a quality cap on the camera (0 low, 1 medium, 2 high,
    /// else none), and whether it pins it.
    View { quality: u8, pinned: bool },
    /// Milliseconds pass (at most 5 s): timers of the shard and the clients run.
    Wait { ms: u16 },
}

/// An RTP packet's header fields: m-line and simulcast layer (indices into the
/// publisher's), payload type (an index into its codecs), sequence number, timestamp,
/// marker, audio level, and whether a dependency descriptor chunk comes first.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
pub struct RtpShape {
    pub mid: u8,
    pub layer: u8,
    pub pt: u8,
    pub seq: u16,
    pub time: u32,
    pub marker: bool,
    pub level: Option<i8>,
    pub dd: bool,
}

impl Encode for CallOp {
    fn encode(&self, w: &mut Writer) {
        match self {
            CallOp::FromPeer { peer } => {
                w.variant(0, 6);
                w.u8(*peer);
            }
            CallOp::FromStranger { host, tcp } => {
                w.variant(1, 6);
                w.u8(*host);
                w.bool(*tcp);
            }
            CallOp::Rtp(shape) => {
                w.variant(2, 6);
                shape.encode(w);
            }
            CallOp::KeyframeRequest { fir } => {
                w.variant(3, 6);
                w.bool(*fir);
            }
            CallOp::View { quality, pinned } => {
                w.variant(4, 6);
                w.u8(*quality);
                w.bool(*pinned);
            }
            CallOp::Wait { ms } => {
                w.variant(5, 6);
                w.u16(*ms);
            }
        }
    }
}

impl Encode for RtpShape {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.mid);
        w.u8(self.layer);
        w.u8(self.pt);
        w.u16(self.seq);
        w.u32(self.time);
        w.bool(self.marker);
        w.option(&self.level);
        w.bool(self.dd);
    }
}

/// What comes before each descriptor of `dependency_descriptor`: whether the subscriber
/// switches source first, and its target spatial layer (`None`: paused).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
pub struct DdHead {
    pub switch: bool,
    pub target: Option<u8>,
}

impl Encode for DdHead {
    fn encode(&self, w: &mut Writer) {
        w.bool(self.switch);
        w.option(&self.target);
    }
}
