//! Talking to other Socket.IO servers and publishers through Redis.

pub mod emitter;
