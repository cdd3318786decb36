//! The retry driver every remote last stage shares: `Offload` runs one input's tries over a
//! `Transport` (the framed link, OIP over HTTP), which only connects, encodes, and makes one
//! exchange, saying how each failure should end the try.
//!
//! Per input: while the host is known to be down (`Backoff`) the input is answered locally at
//! once. Otherwise up to `tries` tries, each connecting first if needed; a refusal ends the
//! input at once, a failed try is logged ("request N try K: ...") and tried again, and an
//! unreachable host or the last failed try gives the input up: the connection is dropped, the
//! backoff grows, and the cascade answers locally, marked degraded (`StageFailure::Unavailable`).

use crate::core::cascade::StageFailure;
use crate::link::LinkAddr;
use crate::offload::{ConnectError, LinkReport, RemoteConfig, RemoteInfo, RemoteStage};
use crate::run::spans::Spans;
use std::time::{Duration, Instant};

/// How a try failed, as the transport classifies it; the driver decides what comes next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryError {
    /// The host will not take this input (or this device): sending it again will not help, so
    /// it is answered locally at once, with no retry and no backoff.
    #[error("{0}")]
    Refused(String),
    /// This try failed (no answer in time, a damaged frame, a dropped connection, a busy
    /// server): try again. A transport whose connection broke drops it, so the next try
    /// connects again.
    #[error("{0}")]
    Retry(String),
    /// The host cannot be reached: give this input up and back off.
    #[error("{0}")]
    Down(String),
}

/// The host's answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// Log-probabilities (or logits) over the host model's classes.
    pub logits: Vec<f32>,
    /// The host's own account of its time and energy, when the protocol carries one.
    pub host: Option<HostTimes>,
}

/// The host's time on one request (decode, preprocess, inference), as it reported it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HostTimes {
    pub ms: f32,
    pub decode_ms: f32,
    pub infer_ms: f32,
    pub mj: Option<f32>,
}

/// One try of one request, as the driver hands it to the transport: what to wait for, where
/// the try's spans go, and the bytes it moved (counted by the transport's stream).
pub struct Attempt<'a> {
    pub seq: u64,
    /// The request is an audit: an input the device answered, sent to check its answer.
    pub audit: bool,
    /// How long to wait for the answer once the request is sent.
    pub reply_timeout: Duration,
    pub spans: &'a mut Spans,
    pub stage: usize,
    pub sent: u64,
    pub received: u64,
}

/// One way of reaching the host: what differs between the framed link and OIP.
pub trait Transport: Send {
    /// A request's encoded input, made once and sent on every try.
    type Payload;

    /// Connects if not connected and says what the host serves (at start, to fail early).
    fn connect(&mut self) -> Result<RemoteInfo, ConnectError>;
    /// Connects before a try if not connected; returns the encoding this connection takes
    /// (a payload made for another is made again).
    fn ready(&mut self) -> Result<&'static str, TryError>;
    /// Encodes the input for request `seq` (an audit when `audit`) on the connection `ready`
    /// made.
    fn encode(
        &self,
        seq: u64,
        audit: bool,
        bytes: &[u8],
        input: &crate::model::Decoded,
    ) -> Result<Self::Payload, String>;
    /// Sends the request and waits for its answer, timing its spans and counting its bytes.
    fn exchange(&mut self, payload: &Self::Payload, attempt: &mut Attempt<'_>) -> Result<Answer, TryError>;
    /// Forgets the connection and what it learned, after an input is given up.
    fn disconnect(&mut self);
    /// How the log names request `seq`.
    fn request_id(&self, seq: u64) -> String {
        seq.to_string()
    }
    /// How a given-up input's reason names the other end.
    fn peer(&self) -> String;
}

/// A remote last stage: the retry driver over one transport.
pub struct Offload<T: Transport> {
    link: T,
    addr: LinkAddr,
    tries: u32,
    reply_timeout: Duration,
    paced: bool,
    seq: u64,
    backoff: Backoff,
}

impl<T: Transport> Offload<T> {
    /// The driver over `link`, trying as `cfg` says.
    pub fn over(cfg: &RemoteConfig, link: T) -> Offload<T> {
        Offload {
            link,
            addr: cfg.addr.clone(),
            tries: cfg.tries.max(1),
            reply_timeout: cfg.reply_timeout,
            paced: cfg.is_paced(),
            seq: 0,
            backoff: Backoff::default(),
        }
    }
}

impl<T: Transport> RemoteStage for Offload<T> {
    fn connect(&mut self) -> Result<RemoteInfo, ConnectError> {
        self.link.connect()
    }

    fn infer(
        &mut self,
        bytes: &[u8],
        input: &crate::model::Decoded,
        spans: &mut Spans,
        stage: usize,
        report: &mut LinkReport,
    ) -> Result<Vec<f32>, StageFailure> {
        self.request(bytes, input, spans, stage, report, false)
    }

    fn audit(
        &mut self,
        bytes: &[u8],
        input: &crate::model::Decoded,
        spans: &mut Spans,
        stage: usize,
        report: &mut LinkReport,
    ) -> Result<Vec<f32>, StageFailure> {
        self.request(bytes, input, spans, stage, report, true)
    }

    fn is_paced(&self) -> bool {
        self.paced
    }
}

impl<T: Transport> Offload<T> {
    /// One request's tries: an input forwarded, or (`audit`) one the device answered, sent
    /// to check its answer. Both take the same tries, backoff and sequence numbers.
    fn request(
        &mut self,
        bytes: &[u8],
        input: &crate::model::Decoded,
        spans: &mut Spans,
        stage: usize,
        report: &mut LinkReport,
        audit: bool,
    ) -> Result<Vec<f32>, StageFailure> {
        report.paced = self.paced;
        self.backoff.check()?;
        self.seq += 1;
        let seq = self.seq;
        let mut last_error = String::new();
        let mut payload: Option<(&'static str, T::Payload)> = None;
        for try_no in 1..=self.tries {
            report.tries = try_no;
            let outcome = 'one_try: {
                let encoding = match self.link.ready() {
                    Ok(encoding) => encoding,
                    Err(e) => break 'one_try Err(e),
                };
                if payload.as_ref().is_none_or(|(made_for, _)| *made_for != encoding) {
                    let made = spans.time("encode", Some(stage), || self.link.encode(seq, audit, bytes, input));
                    payload = Some((encoding, made.map_err(StageFailure::Input)?));
                }
                let (encoding, data) = payload.as_ref().expect("encoded");
                report.encoding = Some(encoding.to_string());
                let mut attempt = Attempt {
                    seq,
                    audit,
                    reply_timeout: self.reply_timeout,
                    spans: &mut *spans,
                    stage,
                    sent: 0,
                    received: 0,
                };
                let outcome = self.link.exchange(data, &mut attempt);
                report.bytes_sent += attempt.sent;
                report.bytes_received += attempt.received;
                outcome
            };
            match outcome {
                Ok(answer) => {
                    self.backoff.succeeded();
                    if let Some(h) = answer.host {
                        report.host_ms = Some(h.ms);
                        report.host_decode_ms = Some(h.decode_ms);
                        report.host_infer_ms = Some(h.infer_ms);
                        report.host_mj = h.mj;
                    }
                    return Ok(answer.logits);
                }
                Err(TryError::Refused(why)) => return Err(StageFailure::Unavailable(why)),
                Err(TryError::Retry(why)) => last_error = why,
                Err(TryError::Down(why)) => {
                    last_error = why;
                    break;
                }
            }
            log::warn!("link {}: request {} try {try_no}: {last_error}", self.addr, self.link.request_id(seq));
        }
        self.link.disconnect();
        self.backoff.failed();
        Err(StageFailure::Unavailable(format!(
            "no answer from {} after {} tries: {last_error}",
            self.link.peer(),
            report.tries
        )))
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// After a request finds no host, the next ones answer locally at once until a backoff
/// (by default doubling from 250 ms to 8 s) has passed, instead of each waiting out its own
/// timeouts.
#[derive(Clone, Debug)]
pub struct Backoff {
    down_until: Option<Instant>,
    delay: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(MIN_BACKOFF, MAX_BACKOFF)
    }
}

impl Backoff {
    /// Waits doubling from `min` to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { down_until: None, delay: min, min, max: max.max(min) }
    }

    /// `Unavailable` while the host is known to be down.
    pub fn check(&self) -> Result<(), StageFailure> {
        match self.down_until {
            Some(until) if Instant::now() < until => Err(StageFailure::Unavailable(format!(
                "host unreachable; next try in {:.1} s",
                (until - Instant::now()).as_secs_f64()
            ))),
            _ => Ok(()),
        }
    }

    pub fn succeeded(&mut self) {
        *self = Backoff::new(self.min, self.max);
    }

    /// Starts the next wait and returns how long it is.
    pub fn failed(&mut self) -> Duration {
        let wait = self.delay;
        self.down_until = Some(Instant::now() + wait);
        self.delay = (self.delay * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A transport played from a script: each `ready` and each `exchange` takes the next step
    /// (when its script runs out: connected in `crop-jpeg`, and no answer in time).
    #[derive(Default)]
    struct Scripted {
        connects: VecDeque<Result<&'static str, TryError>>,
        replies: VecDeque<Result<Answer, TryError>>,
        /// Encoding the input fails with this message.
        bad_input: Option<&'static str>,
        /// The payload (request and encoding) of every exchange.
        sent: Vec<(u64, &'static str)>,
        disconnects: u32,
        encoding: &'static str,
    }

    impl Transport for Scripted {
        type Payload = (u64, &'static str);

        fn connect(&mut self) -> Result<RemoteInfo, ConnectError> {
            Ok(RemoteInfo { model: "large".into(), classes: 3 })
        }

        fn ready(&mut self) -> Result<&'static str, TryError> {
            let step = self.connects.pop_front().unwrap_or(Ok("crop-jpeg"));
            if let Ok(e) = step {
                self.encoding = e;
            }
            step
        }

        fn encode(
            &self,
            seq: u64,
            _audit: bool,
            _bytes: &[u8],
            _input: &crate::model::Decoded,
        ) -> Result<Self::Payload, String> {
            match self.bad_input {
                Some(why) => Err(why.into()),
                None => Ok((seq, self.encoding)),
            }
        }

        fn exchange(&mut self, payload: &Self::Payload, attempt: &mut Attempt<'_>) -> Result<Answer, TryError> {
            assert_eq!(payload.0, attempt.seq, "a request is sent with its own payload");
            self.sent.push(*payload);
            attempt.sent += 100;
            attempt.received += 10;
            attempt.spans.push_since("wait", Some(attempt.stage), Instant::now());
            let reply = self.replies.pop_front();
            reply.unwrap_or_else(|| Err(TryError::Retry(format!("no answer within {:?}", attempt.reply_timeout))))
        }

        fn disconnect(&mut self) {
            self.disconnects += 1;
        }

        fn peer(&self) -> String {
            "the fake host".into()
        }
    }

    const WAIT: Duration = Duration::from_millis(100);

    fn offload(link: Scripted, tries: u32) -> Offload<Scripted> {
        let mut cfg = RemoteConfig::new("tcp:127.0.0.1:9".parse().unwrap());
        cfg.tries = tries;
        cfg.reply_timeout = Duration::from_millis(5);
        let mut o = Offload::over(&cfg, link);
        o.backoff = Backoff::new(WAIT, Duration::from_secs(10));
        o
    }

    fn answer(class: usize) -> Answer {
        let mut logits = vec![-5.0; 3];
        logits[class] = 0.0;
        let host = HostTimes { ms: 4.0, decode_ms: 1.0, infer_ms: 3.0, mj: Some(2.5) };
        Answer { logits, host: Some(host) }
    }

    /// Offloads one input; its result, report and spans.
    fn infer(o: &mut Offload<Scripted>) -> (Result<Vec<f32>, StageFailure>, LinkReport, Spans) {
        let (mut spans, mut report) = (Spans::default(), LinkReport::default());
        let r = o.infer(b"jpeg", &crate::model::Decoded::Image(image::RgbImage::new(4, 4)), &mut spans, 1, &mut report);
        (r, report, spans)
    }

    fn retry() -> Result<Answer, TryError> {
        Err(TryError::Retry("no answer within 5ms".into()))
    }

    fn unavailable(r: Result<Vec<f32>, StageFailure>) -> String {
        match r {
            Err(StageFailure::Unavailable(why)) => why,
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn two_timeouts_then_an_answer_is_answered_on_the_third_try_with_every_try_counted() {
        let link = Scripted { replies: [retry(), retry(), Ok(answer(2))].into(), ..Default::default() };
        let mut o = offload(link, 3);
        let (r, report, spans) = infer(&mut o);
        assert_eq!(r.unwrap(), answer(2).logits);
        assert_eq!((report.tries, report.bytes_sent, report.bytes_received), (3, 300, 30));
        assert_eq!(
            (report.encoding.as_deref(), report.host_ms, report.host_mj),
            (Some("crop-jpeg"), Some(4.0), Some(2.5))
        );
        let names: Vec<_> = spans.0.iter().map(|s| (s.name, s.stage)).collect();
        assert_eq!(names, [("encode", Some(1)), ("wait", Some(1)), ("wait", Some(1)), ("wait", Some(1))]);
        assert_eq!(o.link.sent, [(1, "crop-jpeg"); 3], "one request, encoded once, sent three times");
        assert_eq!(o.link.disconnects, 0);
        assert!(o.backoff.check().is_ok(), "a host that answered is not backed off from");
        // The next input is a new request.
        o.link.replies.push_back(Ok(answer(0)));
        assert_eq!(infer(&mut o).0.unwrap(), answer(0).logits);
        assert_eq!(o.link.sent.last(), Some(&(2, "crop-jpeg")));
    }

    #[test]
    fn a_refused_input_reaches_the_caller_at_once_without_retries_or_backoff() {
        let refused = Err(TryError::Refused("host refused the input: not a JPEG".into()));
        let mut o = offload(Scripted { replies: [refused].into(), ..Default::default() }, 3);
        let (r, report, _) = infer(&mut o);
        assert_eq!(unavailable(r), "host refused the input: not a JPEG");
        assert_eq!((report.tries, o.link.sent.len(), o.link.disconnects), (1, 1, 0));
        assert!(o.backoff.check().is_ok());
        o.link.replies.push_back(Ok(answer(1)));
        assert!(infer(&mut o).0.is_ok(), "the next input is offloaded as usual");
    }

    #[test]
    fn a_refusal_while_connecting_reaches_the_caller_at_once_without_backoff() {
        let refused = Err(TryError::Refused("oip+http://h:1/v2/models/m refused the device: bad token".into()));
        let mut o = offload(Scripted { connects: [refused].into(), ..Default::default() }, 3);
        let (r, report, spans) = infer(&mut o);
        assert_eq!(unavailable(r), "oip+http://h:1/v2/models/m refused the device: bad token");
        assert_eq!((report.tries, o.link.sent.len(), spans.0.len()), (1, 0, 0));
        assert!(o.backoff.check().is_ok());
    }

    #[test]
    fn a_host_that_never_answers_degrades_after_the_configured_tries_and_backs_off_growing() {
        let mut o = offload(Scripted::default(), 3);
        let (r, report, _) = infer(&mut o);
        assert_eq!(unavailable(r), "no answer from the fake host after 3 tries: no answer within 5ms");
        assert_eq!((report.tries, o.link.sent.len(), o.link.disconnects), (3, 3, 1));
        assert_eq!(report.bytes_sent, 300, "bytes of failed tries are counted too");

        // While backed off, inputs are answered locally at once, without touching the link.
        let (r, report, _) = infer(&mut o);
        assert!(unavailable(r).starts_with("host unreachable; next try in"));
        assert_eq!((report.tries, o.link.sent.len()), (0, 3));

        // After the backoff the next input tries again; failing again doubles the wait.
        std::thread::sleep(WAIT + Duration::from_millis(20));
        let (r, _, _) = infer(&mut o);
        assert!(unavailable(r).starts_with("no answer from the fake host after 3 tries"));
        assert_eq!((o.link.sent.len(), o.link.sent[3].0), (6, 2), "the backed-off input took no request number");
        assert_eq!(o.backoff.delay, WAIT * 4, "waits double: {WAIT:?}, then {:?}, next {:?}", WAIT * 2, WAIT * 4);
        assert!(o.backoff.check().is_err());

        // A host that answers again resets the backoff.
        std::thread::sleep(WAIT * 2 + Duration::from_millis(20));
        o.link.replies.push_back(Ok(answer(1)));
        assert!(infer(&mut o).0.is_ok());
        assert_eq!(o.backoff.delay, WAIT);
    }

    #[test]
    fn an_unreachable_host_gives_the_input_up_without_retrying() {
        let down = Err(TryError::Down("cannot open link tcp:127.0.0.1:9: refused".into()));
        let mut o = offload(Scripted { connects: [down].into(), ..Default::default() }, 3);
        let (r, report, _) = infer(&mut o);
        let why = unavailable(r);
        assert_eq!(why, "no answer from the fake host after 1 tries: cannot open link tcp:127.0.0.1:9: refused");
        assert_eq!((report.tries, report.encoding, o.link.sent.len(), o.link.disconnects), (1, None, 0, 1));
        assert!(o.backoff.check().is_err());
    }

    #[test]
    fn a_payload_is_made_again_only_when_a_new_connection_takes_another_encoding() {
        let link = Scripted {
            connects: [Ok("crop-jpeg"), Ok("crop-jpeg"), Ok("original")].into(),
            replies: [retry(), retry(), Ok(answer(0))].into(),
            ..Default::default()
        };
        let mut o = offload(link, 3);
        let (r, report, spans) = infer(&mut o);
        assert!(r.is_ok());
        assert_eq!(o.link.sent, [(1, "crop-jpeg"), (1, "crop-jpeg"), (1, "original")]);
        assert_eq!(spans.0.iter().filter(|s| s.name == "encode").count(), 2);
        assert_eq!(report.encoding.as_deref(), Some("original"));
    }

    #[test]
    fn an_input_that_cannot_be_encoded_fails_as_input_without_a_request() {
        let mut o = offload(Scripted { bad_input: Some("cannot encode the crop"), ..Default::default() }, 3);
        let (r, report, _) = infer(&mut o);
        assert_eq!(r, Err(StageFailure::Input("cannot encode the crop".into())));
        assert_eq!((report.tries, o.link.sent.len()), (1, 0));
        assert!(o.backoff.check().is_ok(), "a bad input says nothing about the host");
    }
}
