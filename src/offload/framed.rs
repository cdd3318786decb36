//! The framed link (serial or TCP) as a `Transport`: it opens the stream (paced by
//! `--shape`), shakes hands (`Hello` / `Welcome`, the token first when there is one), sends
//! `Infer` frames and waits for the `Answer` with the request's sequence number; answers to
//! other requests (late, duplicated) are dropped.

use crate::link::{
    connect, write_msg, write_sync, Encoding, ErrorCode, FrameReader, Hello, InferRequest, InferResponse, LinkError,
    Message, Paced, Stream, Welcome, AUDIT_FLAG, DEFAULT_MAX_FRAME,
};
use crate::model::Decoded;
use crate::offload::driver::{Answer, Attempt, HostTimes, Offload, Transport, TryError};
use crate::offload::{payload, ConnectError, RemoteConfig, RemoteInfo};
use std::time::{Duration, Instant};

/// The remote last stage over the framed link.
pub type Remote = Offload<FramedTransport>;

impl Offload<FramedTransport> {
    /// A remote stage that opens its link from `cfg.addr`.
    pub fn new(cfg: RemoteConfig) -> Remote {
        let (addr, timeout) = (cfg.addr.clone(), cfg.connect_timeout);
        Remote::with_opener(cfg, move || connect(&addr, timeout))
    }

    /// A remote stage over streams made by `open` (a PTY end, an in-memory pipe).
    pub fn with_opener(
        cfg: RemoteConfig,
        open: impl FnMut() -> Result<Box<dyn Stream>, LinkError> + Send + 'static,
    ) -> Remote {
        Offload::over(&cfg.clone(), FramedTransport { cfg, open: Box::new(open), conn: None })
    }
}

struct Conn {
    reader: FrameReader<Box<dyn Stream>>,
    welcome: Welcome,
    encoding: Encoding,
}

/// The framed link's half of the remote stage.
pub struct FramedTransport {
    cfg: RemoteConfig,
    open: Box<dyn FnMut() -> Result<Box<dyn Stream>, LinkError> + Send>,
    conn: Option<Conn>,
}

impl FramedTransport {
    fn ensure_connected(&mut self) -> Result<&Conn, ConnectError> {
        if self.conn.is_none() {
            self.conn = Some(self.handshake()?);
        }
        Ok(self.conn.as_ref().expect("connected"))
    }

    fn handshake(&mut self) -> Result<Conn, ConnectError> {
        use ConnectError::{Refused, Unreachable};
        let addr = &self.cfg.addr;
        let stream = (self.open)().map_err(|e| Unreachable(format!("cannot open link {addr}: {e}")))?;
        let mut stream: Box<dyn Stream> = match &self.cfg.shaping {
            Some(s) if s.is_active() => Box::new(Paced::new(stream, s.clone())),
            _ => stream,
        };
        stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| Unreachable(format!("{addr}: {e}")))?;
        let mut reader = FrameReader::new(stream, DEFAULT_MAX_FRAME as usize);
        let hello = Hello::new(self.cfg.device_id.clone(), self.cfg.encodings.clone());
        let deadline = Instant::now() + self.cfg.connect_timeout;
        // A lone 0 first ends whatever came before on a serial line (a frame a timed-out write
        // left half sent), so the host does not take our first frame as part of it.
        let sent = write_sync(reader.get_mut()).and_then(|_| match &self.cfg.token {
            Some(token) => write_msg(reader.get_mut(), &Message::Auth { token: token.clone() }),
            None => Ok(0),
        });
        sent.and_then(|_| write_msg(reader.get_mut(), &Message::Hello(hello.clone())))
            .map_err(|e| Unreachable(format!("link {addr}: handshake: {e}")))?;
        loop {
            match reader.read_msg() {
                Ok(Message::Welcome(w)) => {
                    let encoding = w.choose_encoding(&self.cfg.encodings).ok_or_else(|| {
                        let (sends_text, takes_text) =
                            (self.cfg.encodings.contains(&Encoding::Text), w.accepts.contains(&Encoding::Text));
                        Refused(match (sends_text, takes_text) {
                            (true, false) => format!(
                                "the host's model '{}' does not take text (it takes {:?}; an image model, or an older host): a text cascade needs a host serving a text model",
                                w.model, w.accepts
                            ),
                            (false, true) => {
                                format!("the host's model '{}' takes text; this device's cascade takes images", w.model)
                            }
                            _ => format!(
                                "the host accepts none of the encodings {:?} (it takes {:?})",
                                self.cfg.encodings, w.accepts
                            ),
                        })
                    })?;
                    reader.set_max_frame(w.agreed_max_frame(&hello) as usize);
                    log::info!(
                        "link {}: host '{}' serves {} ({}x{}), sending {}",
                        self.cfg.addr,
                        w.host_id,
                        w.model,
                        w.input.size,
                        w.input.size,
                        encoding
                    );
                    return Ok(Conn { reader, welcome: w, encoding });
                }
                Ok(Message::Error(e)) if e.code == ErrorCode::Unauthorized => {
                    return Err(Refused(format!("host {addr} refused the device: {e}")))
                }
                // The host saw line noise before our frames (the rest of a half-sent frame).
                Ok(Message::Error(e)) if e.code == ErrorCode::BadFrame && e.seq.is_none() => {}
                Ok(Message::Error(e)) => return Err(Unreachable(format!("host {addr} refused the handshake: {e}"))),
                Ok(_) | Err(LinkError::Frame(_)) => {}
                Err(LinkError::Timeout) if Instant::now() < deadline => {}
                Err(LinkError::Timeout) => {
                    return Err(Unreachable(format!(
                        "link {addr}: no answer to the handshake within {:?} (is the host running at the other end?)",
                        self.cfg.connect_timeout
                    )))
                }
                Err(e) => return Err(Unreachable(format!("link {addr}: handshake: {e}"))),
            }
        }
    }

    /// Reads frames until the answer to `seq`, an error for it, or the reply deadline.
    fn await_answer(conn: &mut Conn, wire_seq: u64, attempt: &mut Attempt<'_>) -> Result<InferResponse, Wait> {
        let deadline = Instant::now() + attempt.reply_timeout;
        loop {
            let before = conn.reader.consumed();
            let msg = conn.reader.read_msg();
            attempt.received += conn.reader.consumed() - before;
            match msg {
                Ok(Message::Answer(a)) if a.seq == wire_seq => return Ok(a),
                // An answer to a request already answered or given up (a duplicate, a late reply).
                Ok(Message::Answer(_)) => {}
                Ok(Message::Error(e)) if e.seq == Some(wire_seq) => return Err(Wait::Refused(e.code, e.message)),
                // An error without a sequence number: the host saw a damaged frame, most
                // likely our request; send it again.
                Ok(Message::Error(e)) if e.seq.is_none() => return Err(Wait::Retry(format!("host: {e}"))),
                Ok(_) => {}
                Err(LinkError::Frame(e)) => log::debug!("damaged frame from the host: {e}"),
                Err(LinkError::Timeout) if Instant::now() < deadline => {}
                Err(LinkError::Timeout) => {
                    return Err(Wait::Retry(format!("no answer within {:?}", attempt.reply_timeout)))
                }
                Err(e) => return Err(Wait::Broken(format!("link failed: {e}"))),
            }
        }
    }
}

/// How a try on an open connection ended without an answer.
enum Wait {
    /// The host answered with an error for this request.
    Refused(ErrorCode, String),
    /// Try again on the same connection.
    Retry(String),
    /// The connection is gone.
    Broken(String),
}

impl Transport for FramedTransport {
    type Payload = (Encoding, Vec<u8>);

    fn connect(&mut self) -> Result<RemoteInfo, ConnectError> {
        let w = &self.ensure_connected()?.welcome;
        Ok(RemoteInfo { model: w.model.clone(), classes: w.classes as usize })
    }

    /// Any failure to connect gives the input up, a refusal included (it backs off too).
    fn ready(&mut self) -> Result<&'static str, TryError> {
        self.ensure_connected().map(|c| c.encoding.name()).map_err(|e| TryError::Down(e.to_string()))
    }

    fn encode(&self, _seq: u64, _audit: bool, bytes: &[u8], input: &Decoded) -> Result<Self::Payload, String> {
        let c = self.conn.as_ref().ok_or("not connected")?;
        Ok((c.encoding, payload::encode_payload(c.encoding, bytes, input, &c.welcome, self.cfg.jpeg_quality)?))
    }

    /// Spans: send, wait. A send that fails (the host not taking bytes within the write
    /// timeout, a closed link) or a broken link drops the connection: the next try opens it
    /// again.
    fn exchange(&mut self, payload: &Self::Payload, attempt: &mut Attempt<'_>) -> Result<Answer, TryError> {
        let conn = self.conn.as_mut().ok_or_else(|| TryError::Retry("not connected".into()))?;
        let (encoding, data) = payload;
        // An audit carries its mark in the top bit of the sequence number, echoed back.
        let wire_seq = if attempt.audit { attempt.seq | AUDIT_FLAG } else { attempt.seq };
        let req = InferRequest {
            seq: wire_seq,
            encoding: *encoding,
            payload: data.clone(),
            device_probs: None,
            want_probs: self.cfg.want_probs,
        };
        let stage = Some(attempt.stage);
        let sent = attempt.spans.time("send", stage, || write_msg(conn.reader.get_mut(), &Message::Infer(req)));
        let waited = match sent {
            Ok(n) => {
                attempt.sent += n as u64;
                let start = Instant::now();
                let waited = Self::await_answer(conn, wire_seq, attempt);
                attempt.spans.push_since("wait", stage, start);
                waited
            }
            Err(e) => Err(Wait::Broken(format!("send failed: {e}"))),
        };
        match waited {
            Ok(a) => {
                let classes = conn.welcome.classes as usize;
                let host =
                    HostTimes { ms: a.host_ms, decode_ms: a.host_decode_ms, infer_ms: a.host_infer_ms, mj: a.host_mj };
                Ok(Answer { logits: answer_logits(&a, classes), host: Some(host) })
            }
            // The host cannot take this input; sending it again will not help.
            Err(Wait::Refused(ErrorCode::BadPayload | ErrorCode::BadRequest, why)) => {
                Err(TryError::Refused(format!("host refused the input: {why}")))
            }
            Err(Wait::Refused(_, why) | Wait::Retry(why)) => Err(TryError::Retry(why)),
            Err(Wait::Broken(why)) => {
                self.conn = None;
                Err(TryError::Retry(why))
            }
        }
    }

    fn disconnect(&mut self) {
        self.conn = None;
    }

    fn peer(&self) -> String {
        "the host".into()
    }
}

/// The host's answer as logits for the cascade driver: its full probabilities when sent,
/// otherwise its top-k with the remaining mass spread over the other classes.
fn answer_logits(a: &InferResponse, classes: usize) -> Vec<f32> {
    let probs = match &a.probs {
        Some(p) => p.clone(),
        None => {
            let listed: f32 = a.top.iter().map(|(_, p)| p).sum();
            let rest = classes.saturating_sub(a.top.len()).max(1);
            let fill = ((1.0 - listed).max(0.0) / rest as f32).min(a.top.last().map_or(1.0, |t| t.1));
            let mut p = vec![fill; classes.max(1)];
            for &(c, v) in &a.top {
                if let Some(slot) = p.get_mut(c as usize) {
                    *slot = v;
                }
            }
            p
        }
    };
    crate::core::policy::log_probs(probs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cascade::StageFailure;
    use crate::core::policy::{argmax, softmax};
    use crate::link::{encode, HostInput};
    use crate::offload::{LinkReport, RemoteStage};
    use crate::run::spans::Spans;
    use std::collections::VecDeque;
    use std::io::{self, Read, Write};
    use std::sync::{Arc, Mutex};

    #[test]
    fn top_k_answers_become_a_distribution_with_the_same_argmax() {
        let a = InferResponse {
            seq: 1,
            top: vec![(7, 0.6), (3, 0.2)],
            probs: None,
            host_ms: 1.0,
            host_decode_ms: 0.5,
            host_infer_ms: 0.5,
            host_mj: None,
        };
        let l = answer_logits(&a, 10);
        let p = softmax(&l, 1.0);
        assert_eq!(argmax(&p), 7);
        assert!((p[7] - 0.6).abs() < 1e-5 && (p[3] - 0.2).abs() < 1e-5, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    /// A host played from a script, in memory: reads take the frames queued in `replies`
    /// (and time out when there are none); writes are kept in `written`.
    #[derive(Clone, Default)]
    struct ScriptedHost {
        replies: Arc<Mutex<VecDeque<u8>>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl ScriptedHost {
        fn queue(&self, msg: &Message) -> u64 {
            let frame = encode(msg);
            self.replies.lock().unwrap().extend(&frame);
            frame.len() as u64
        }

        /// The requests the device sent, by sequence number.
        fn requests(&self) -> Vec<u64> {
            let written = self.written.lock().unwrap().clone();
            let mut reader = FrameReader::new(written.as_slice(), DEFAULT_MAX_FRAME as usize);
            std::iter::from_fn(|| reader.read_msg().ok())
                .filter_map(|m| match m {
                    Message::Infer(r) => Some(r.seq),
                    _ => None,
                })
                .collect()
        }
    }

    impl Read for ScriptedHost {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let mut replies = self.replies.lock().unwrap();
            if replies.is_empty() {
                drop(replies);
                std::thread::sleep(Duration::from_millis(1));
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(replies.len());
            for (slot, b) in buf.iter_mut().zip(replies.drain(..n)) {
                *slot = b;
            }
            Ok(n)
        }
    }

    impl Write for ScriptedHost {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for ScriptedHost {
        fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }

        fn try_clone_box(&self) -> io::Result<Box<dyn Stream>> {
            Ok(Box::new(self.clone()))
        }
    }

    fn welcome() -> Message {
        Message::Welcome(Welcome {
            version: crate::link::PROTOCOL_VERSION,
            host_id: "scripted".into(),
            model: "large".into(),
            input: HostInput { size: 8, channels: 3, crop_fraction: 1.0 },
            classes: 4,
            accepts: vec![Encoding::Original],
            max_frame: DEFAULT_MAX_FRAME,
        })
    }

    fn answer(seq: u64, class: u32) -> Message {
        Message::Answer(InferResponse {
            seq,
            top: vec![(class, 0.9)],
            probs: None,
            host_ms: 1.0,
            host_decode_ms: 0.5,
            host_infer_ms: 0.5,
            host_mj: None,
        })
    }

    /// Answers to other requests (one the device never sent, a duplicate of one already
    /// answered) are dropped: each input takes the answer to its own request, on the first try.
    #[test]
    fn answers_to_other_requests_are_dropped_and_each_input_takes_its_own() {
        let host = ScriptedHost::default();
        host.queue(&welcome());
        let mut cfg = RemoteConfig::new("tcp:127.0.0.1:9".parse().unwrap());
        cfg.encodings = vec![Encoding::Original];
        cfg.reply_timeout = Duration::from_secs(5);
        let opened = host.clone();
        let mut remote = Remote::with_opener(cfg, move || Ok(Box::new(opened.clone()) as Box<dyn Stream>));
        assert_eq!(remote.connect(), Ok(RemoteInfo { model: "large".into(), classes: 4 }));

        let mut class_of = |expected_bytes: u64| {
            let (mut spans, mut report) = (Spans::default(), LinkReport::default());
            let logits = remote.infer(b"jpeg", &Decoded::Image(image::RgbImage::new(8, 8)), &mut spans, 1, &mut report);
            assert_eq!((report.tries, report.bytes_received), (1, expected_bytes), "{report:?}");
            logits.map(|l| argmax(&l))
        };
        let bytes = host.queue(&answer(7, 1)) + host.queue(&answer(1, 2));
        assert_eq!(class_of(bytes), Ok(2), "the answer to request 7 (never sent) is dropped");
        let bytes = host.queue(&answer(1, 2)) + host.queue(&answer(2, 3));
        assert_eq!(class_of(bytes), Ok(3), "a duplicate answer to request 1 is dropped");
        assert_eq!(host.requests(), [1, 2], "each request sent once");
    }

    /// An error naming the request with a bad payload is a refusal: no second try.
    #[test]
    fn a_bad_payload_error_for_the_request_is_a_refusal() {
        let host = ScriptedHost::default();
        host.queue(&welcome());
        host.queue(&Message::Error(crate::link::ErrorMsg {
            seq: Some(1),
            code: ErrorCode::BadPayload,
            message: "not an image".into(),
        }));
        let mut cfg = RemoteConfig::new("tcp:127.0.0.1:9".parse().unwrap());
        cfg.encodings = vec![Encoding::Original];
        let opened = host.clone();
        let mut remote = Remote::with_opener(cfg, move || Ok(Box::new(opened.clone()) as Box<dyn Stream>));
        let (mut spans, mut report) = (Spans::default(), LinkReport::default());
        let r = remote.infer(b"jpeg", &Decoded::Image(image::RgbImage::new(8, 8)), &mut spans, 1, &mut report);
        assert_eq!(r, Err(StageFailure::Unavailable("host refused the input: not an image".into())));
        assert_eq!((report.tries, host.requests()), (1, vec![1]));
        let names: Vec<_> = spans.0.iter().map(|s| s.name).collect();
        assert_eq!(names, ["encode", "send", "wait"]);
    }
}
