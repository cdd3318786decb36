//! The device–host link: how the board sends the inputs its small model is unsure about to the
//! large model on a host, and gets answers back, over a serial line or TCP. `msg` holds the
//! wire messages both ends share; `codec` frames them (COBS, version byte, CRC-32) on any byte
//! stream and resynchronises after damage; `transport` names and opens links and can pace a
//! fast link to rehearse a slow one (with `rng`, a seeded generator, for its losses).
//! Nothing here knows about models or images: callers put bytes in and take messages out.

pub mod codec;
pub mod msg;
pub mod paced;
pub mod rng;
pub mod transport;

pub use codec::{decode, encode, write_msg, write_sync, FrameError, FrameReader, LinkError};
pub use msg::{
    Encoding, ErrorCode, ErrorMsg, Hello, HostInput, InferRequest, InferResponse, Message, Welcome, AUDIT_FLAG,
    DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
pub use paced::{transfer_time, Paced, Shaping};
pub use rng::Rng;
#[cfg(unix)]
pub use transport::SerialStream;
pub use transport::{connect, LinkAddr, ParseError, Stream, DEFAULT_BAUD};
