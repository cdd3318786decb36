//! The Open Inference Protocol v2 (the KServe v2 protocol, spoken by Triton, KServe and
//! Seldon MLServer), over HTTP/1.1 with JSON bodies and the binary tensor extension.
//!
//! This module is the wire format both ends share, free of I/O: inference requests and
//! responses as JSON plus optional raw tensor bytes (`Inference-Header-Content-Length` gives
//! the JSON's length; tensors carry `binary_data_size`), model and server metadata, and the
//! error body. `server` serves a `Host` on it; `client` is the device's remote stage for any
//! OIP v2 server; `http` is the HTTP/1.1 framing both use.

pub mod http;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The header naming the JSON part's length in a body with binary tensor data.
pub const HEADER_LEN: &str = "Inference-Header-Content-Length";
/// The extension name a server lists in `GET /v2` when it takes binary tensor data.
pub const BINARY_EXTENSION: &str = "binary_tensor_data";

/// Tensor element types this runtime sends and takes: FP32 for images and logits, BYTES
/// (each element a byte string; text as UTF-8) for a text model's input.
pub const FP32: &str = "FP32";
pub const BYTES: &str = "BYTES";

/// A tensor's name, type and shape as metadata lists it (-1: any size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub platform: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// `GET /v2`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerMetadata {
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub extensions: Vec<String>,
}

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// One tensor, flat in row-major order: FP32 values in `data`, or, for a BYTES tensor,
/// its elements in `bytes` (`data` then empty).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
    /// The elements of a BYTES tensor; None for FP32.
    pub bytes: Option<Vec<Vec<u8>>>,
}

impl Tensor {
    /// An FP32 tensor.
    pub fn new(name: impl Into<String>, shape: Vec<i64>, data: Vec<f32>) -> Tensor {
        Tensor { name: name.into(), shape, data, bytes: None }
    }

    /// A BYTES tensor (text: each element its UTF-8).
    pub fn bytes(name: impl Into<String>, shape: Vec<i64>, elements: Vec<Vec<u8>>) -> Tensor {
        Tensor { name: name.into(), shape, data: Vec::new(), bytes: Some(elements) }
    }

    /// Its datatype: `FP32` or `BYTES`.
    pub fn datatype(&self) -> &'static str {
        if self.bytes.is_some() {
            BYTES
        } else {
            FP32
        }
    }

    /// A BYTES tensor's elements as text: an error naming the element that is not UTF-8
    /// (`what`: "input" or "output").
    pub fn texts(&self, what: &str) -> Result<Vec<&str>, WireError> {
        let name = &self.name;
        let elements = self.bytes.as_ref().ok_or_else(|| werr(format!("{what} '{name}' is {FP32}, not {BYTES}")))?;
        elements
            .iter()
            .enumerate()
            .map(|(i, e)| {
                std::str::from_utf8(e).map_err(|u| {
                    werr(format!(
                        "{what} '{name}' element {i} is not UTF-8 text (invalid byte at offset {})",
                        u.valid_up_to()
                    ))
                })
            })
            .collect()
    }
}

/// A request's wish for one output.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputWish {
    pub name: String,
    pub binary: bool,
}

/// An inference request, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Outputs asked for; empty: every output, as JSON unless `binary_output`.
    pub outputs: Vec<OutputWish>,
    /// The request-level `binary_data_output` parameter: every output as binary data.
    pub binary_output: bool,
    /// The request-level `audit` parameter: an input the device answered itself, sent to
    /// check its answer (served like any request, counted apart).
    pub audit: bool,
}

/// An inference response, decoded.
#[derive(Clone, Debug, PartialEq)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: Option<String>,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

/// A body that could not be decoded; the message names what and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

fn werr(msg: impl Into<String>) -> WireError {
    WireError(msg.into())
}

#[derive(Serialize, Deserialize)]
struct TensorJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct RequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<TensorJson>,
    #[serde(default)]
    outputs: Option<Vec<OutputJson>>,
}

#[derive(Deserialize)]
struct ResponseJson {
    model_name: String,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    outputs: Vec<TensorJson>,
}

/// Splits a body into its JSON part and its binary tail, as `header_len` (the
/// `Inference-Header-Content-Length` header) says.
pub fn split_body(body: &[u8], header_len: Option<usize>) -> Result<(&[u8], &[u8]), WireError> {
    match header_len {
        None => Ok((body, &[])),
        Some(n) if n > body.len() => {
            Err(werr(format!("{HEADER_LEN} is {n} but the body has only {} bytes (truncated?)", body.len())))
        }
        Some(n) => Ok(body.split_at(n)),
    }
}

fn param_bool(p: &Option<Map<String, Value>>, key: &str) -> bool {
    p.as_ref().and_then(|p| p.get(key)).and_then(Value::as_bool).unwrap_or(false)
}

/// Decodes a request body (JSON, or JSON plus binary tensor data).
pub fn decode_request(body: &[u8], header_len: Option<usize>) -> Result<InferRequest, WireError> {
    let (json, binary) = split_body(body, header_len)?;
    let req: RequestJson =
        serde_json::from_slice(json).map_err(|e| werr(format!("the request is not valid OIP v2 JSON: {e}")))?;
    let inputs = decode_tensors(req.inputs, binary, "input")?;
    let outputs = req
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|o| OutputWish { binary: param_bool(&o.parameters, "binary_data"), name: o.name })
        .collect();
    Ok(InferRequest {
        id: req.id,
        inputs,
        outputs,
        binary_output: param_bool(&req.parameters, "binary_data_output"),
        audit: param_bool(&req.parameters, "audit"),
    })
}

/// Decodes a response body.
pub fn decode_response(body: &[u8], header_len: Option<usize>) -> Result<InferResponse, WireError> {
    let (json, binary) = split_body(body, header_len)?;
    let resp: ResponseJson =
        serde_json::from_slice(json).map_err(|e| werr(format!("the response is not valid OIP v2 JSON: {e}")))?;
    let outputs = decode_tensors(resp.outputs, binary, "output")?;
    Ok(InferResponse { model_name: resp.model_name, model_version: resp.model_version, id: resp.id, outputs })
}

/// The tensors of a request or response: each from its JSON `data` or from the next
/// `binary_data_size` bytes of `binary`, which they must use up exactly. BYTES elements are
/// bounded by the body they came in (the endpoint's body limit): a length prefix is checked
/// against the bytes left, never allocated on trust.
fn decode_tensors(list: Vec<TensorJson>, binary: &[u8], what: &str) -> Result<Vec<Tensor>, WireError> {
    let mut at = 0usize;
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let name = &t.name;
        let is_bytes = match t.datatype.as_str() {
            FP32 => false,
            BYTES => true,
            other => {
                return Err(werr(format!(
                    "{what} '{name}' has datatype {other}, only {FP32} and {BYTES} are supported here"
                )))
            }
        };
        if let Some(d) = t.shape.iter().find(|&&d| d < 0) {
            return Err(werr(format!("{what} '{name}' has shape {:?}: dimension {d} is negative", t.shape)));
        }
        let count = t
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
            .filter(|&n| n <= (1 << 30))
            .ok_or_else(|| werr(format!("{what} '{name}' has shape {:?}: far too many elements", t.shape)))?;
        let size = t.parameters.as_ref().and_then(|p| p.get("binary_data_size"));
        let (data, bytes) = match (size, &t.data) {
            (Some(_), Some(_)) => {
                return Err(werr(format!("{what} '{name}' has both data and binary_data_size")));
            }
            (Some(size), None) => {
                let size = size.as_u64().ok_or_else(|| {
                    werr(format!("{what} '{name}': binary_data_size is {size}, not a number of bytes"))
                })? as usize;
                if !is_bytes && size != count * 4 {
                    return Err(werr(format!(
                        "{what} '{name}': binary_data_size is {size} bytes, but shape {:?} of {FP32} needs {}",
                        t.shape,
                        count * 4
                    )));
                }
                let end = at.checked_add(size).filter(|&e| e <= binary.len()).ok_or_else(|| {
                    werr(format!(
                        "{what} '{name}' needs {size} bytes of binary data but only {} remain (truncated body?)",
                        binary.len() - at
                    ))
                })?;
                let raw = &binary[at..end];
                at = end;
                if is_bytes {
                    (Vec::new(), Some(split_bytes(raw, count, name, what)?))
                } else {
                    (raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(), None)
                }
            }
            (None, Some(v)) => {
                let found = if is_bytes {
                    let mut elements = Vec::new();
                    flatten_bytes(v, &mut elements, name, what)?;
                    (Vec::new(), Some(elements))
                } else {
                    let mut flat = Vec::with_capacity(count);
                    flatten(v, &mut flat, name, what)?;
                    (flat, None)
                };
                let n = found.1.as_ref().map_or(found.0.len(), Vec::len);
                if n != count {
                    return Err(werr(format!(
                        "{what} '{name}' has {n} values but its shape {:?} needs {count}",
                        t.shape
                    )));
                }
                found
            }
            (None, None) => return Err(werr(format!("{what} '{name}' has neither data nor binary_data_size"))),
        };
        out.push(Tensor { name: t.name, shape: t.shape, data, bytes });
    }
    if at != binary.len() {
        return Err(werr(format!("{} bytes of binary data belong to no {what}", binary.len() - at)));
    }
    Ok(out)
}

/// Splits a BYTES tensor's binary data into its `count` elements, each a 4-byte little-endian
/// length and then that many bytes, which must use `raw` up exactly.
fn split_bytes(raw: &[u8], count: usize, name: &str, what: &str) -> Result<Vec<Vec<u8>>, WireError> {
    let mut elements = Vec::with_capacity(count.min(raw.len() / 4));
    let mut rest = raw;
    for i in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(werr(format!(
                "{what} '{name}': element {i} of {count} has no 4-byte length prefix ({} bytes left)",
                rest.len()
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(werr(format!(
                "{what} '{name}': element {i}'s length prefix says {len} bytes but only {} remain",
                tail.len()
            )));
        }
        let (element, tail) = tail.split_at(len);
        elements.push(element.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(werr(format!(
            "{what} '{name}': {} bytes after its {count} elements (binary_data_size too large, or a wrong length prefix)",
            rest.len()
        )));
    }
    Ok(elements)
}

/// Flattens JSON BYTES data, strings flat or nested row-major, into `out`.
fn flatten_bytes(v: &Value, out: &mut Vec<Vec<u8>>, name: &str, what: &str) -> Result<(), WireError> {
    match v {
        Value::String(s) => {
            out.push(s.as_bytes().to_vec());
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| flatten_bytes(i, out, name, what)),
        other => Err(werr(format!(
            "{what} '{name}': element {} is {other}, not a string ({BYTES} data in JSON is strings)",
            out.len()
        ))),
    }
}

/// Flattens JSON tensor data, flat or nested row-major, into `out`.
fn flatten(v: &Value, out: &mut Vec<f32>, name: &str, what: &str) -> Result<(), WireError> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().ok_or_else(|| werr(format!("{what} '{name}': {n} is not a number")))?;
            out.push(x as f32);
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out, name, what)),
        other => Err(werr(format!("{what} '{name}': {other} is not an {FP32} value"))),
    }
}

/// Encodes tensors as the `inputs` or `outputs` list: as binary data appended to `binary`
/// when `binary(t)`, else as JSON data.
fn encode_tensors(tensors: &[Tensor], binary: impl Fn(&Tensor) -> bool, tail: &mut Vec<u8>) -> Vec<TensorJson> {
    tensors
        .iter()
        .map(|t| {
            let (parameters, data) = match (binary(t), &t.bytes) {
                (true, elements) => {
                    let before = tail.len();
                    match elements {
                        Some(elements) => {
                            for e in elements {
                                tail.extend_from_slice(&(e.len() as u32).to_le_bytes());
                                tail.extend_from_slice(e);
                            }
                        }
                        None => {
                            tail.reserve(t.data.len() * 4);
                            for v in &t.data {
                                tail.extend_from_slice(&v.to_le_bytes());
                            }
                        }
                    }
                    let mut p = Map::new();
                    p.insert("binary_data_size".into(), Value::from(tail.len() - before));
                    (Some(p), None)
                }
                // JSON has strings, not bytes: an element that is not UTF-8 goes lossily (send
                // such a tensor as binary data).
                (false, Some(elements)) => (
                    None,
                    Some(Value::from(
                        elements.iter().map(|e| Value::from(String::from_utf8_lossy(e))).collect::<Vec<Value>>(),
                    )),
                ),
                (false, None) => (None, Some(Value::from(t.data.iter().map(|&v| json_f32(v)).collect::<Vec<Value>>()))),
            };
            TensorJson { name: t.name.clone(), shape: t.shape.clone(), datatype: t.datatype().into(), parameters, data }
        })
        .collect()
}

/// A float as JSON: finite values as numbers (shortest form that reads back exactly), others
/// as null, which JSON has no number for.
fn json_f32(v: f32) -> Value {
    serde_json::Number::from_f64(v as f64).map_or(Value::Null, Value::Number)
}

/// Joins a JSON part and a binary tail into a body; the header length when there is a tail.
fn join(json: Vec<u8>, tail: Vec<u8>) -> (Vec<u8>, Option<usize>) {
    if tail.is_empty() {
        (json, None)
    } else {
        let n = json.len();
        let mut body = json;
        body.extend_from_slice(&tail);
        (body, Some(n))
    }
}

/// Encodes a request for one output; with `binary`, the input and the output travel as
/// binary data. Returns the body and its `Inference-Header-Content-Length`, if any.
pub fn encode_request(id: &str, inputs: &[Tensor], output: Option<&str>, binary: bool) -> (Vec<u8>, Option<usize>) {
    encode_request_marked(id, inputs, output, binary, false)
}

/// [`encode_request`], marked as an audit when `audit` (the request parameter `audit: true`:
/// an input the device answered itself, sent to check its answer; servers that do not know
/// the parameter ignore it, as OIP v2 lets them).
pub fn encode_request_marked(
    id: &str,
    inputs: &[Tensor],
    output: Option<&str>,
    binary: bool,
    audit: bool,
) -> (Vec<u8>, Option<usize>) {
    let mut tail = Vec::new();
    let inputs = encode_tensors(inputs, |_| binary, &mut tail);
    let mut req = Map::new();
    req.insert("id".into(), Value::from(id));
    if audit {
        let mut p = Map::new();
        p.insert("audit".into(), Value::Bool(true));
        req.insert("parameters".into(), Value::Object(p));
    }
    req.insert("inputs".into(), serde_json::to_value(inputs).expect("tensors serialise"));
    if let Some(name) = output {
        let mut o = Map::new();
        o.insert("name".into(), Value::from(name));
        if binary {
            let mut p = Map::new();
            p.insert("binary_data".into(), Value::Bool(true));
            o.insert("parameters".into(), Value::Object(p));
        }
        req.insert("outputs".into(), Value::Array(vec![Value::Object(o)]));
    }
    join(serde_json::to_vec(&Value::Object(req)).expect("JSON serialises"), tail)
}

/// Encodes a response; `binary(t)` says which outputs travel as binary data.
pub fn encode_response(
    model: &str,
    version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
    binary: impl Fn(&Tensor) -> bool,
) -> (Vec<u8>, Option<usize>) {
    let mut tail = Vec::new();
    let outputs = encode_tensors(outputs, binary, &mut tail);
    let mut resp = Map::new();
    resp.insert("model_name".into(), Value::from(model));
    resp.insert("model_version".into(), Value::from(version));
    if let Some(id) = id {
        resp.insert("id".into(), Value::from(id));
    }
    resp.insert("outputs".into(), serde_json::to_value(outputs).expect("tensors serialise"));
    join(serde_json::to_vec(&Value::Object(resp)).expect("JSON serialises"), tail)
}

pub fn error_body(msg: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { error: msg.to_owned() }).expect("JSON serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor() -> Tensor {
        Tensor::new("input", vec![2, 3], vec![0.5, -1.25, 3.0, 1e-7, f32::MAX, -0.0])
    }

    #[test]
    fn requests_round_trip_as_json_and_as_binary() {
        for binary in [false, true] {
            let (body, hl) = encode_request("r7", &[tensor()], Some("logits"), binary);
            assert_eq!(hl.is_some(), binary);
            let req = decode_request(&body, hl).unwrap();
            assert_eq!(req.id.as_deref(), Some("r7"));
            assert_eq!(req.inputs, vec![tensor()], "binary={binary}");
            assert_eq!(req.outputs, vec![OutputWish { name: "logits".into(), binary }]);
        }
    }

    #[test]
    fn responses_round_trip_and_binary_is_raw_little_endian() {
        let out = Tensor::new("logits", vec![1, 2], vec![1.5, -2.0]);
        let (body, hl) = encode_response("m", "1", Some("r1"), std::slice::from_ref(&out), |_| true);
        let n = hl.unwrap();
        assert_eq!(&body[n..], &[0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0]);
        let json: Value = serde_json::from_slice(&body[..n]).unwrap();
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 8);
        let r = decode_response(&body, hl).unwrap();
        assert_eq!((r.model_name.as_str(), r.id.as_deref(), r.outputs), ("m", Some("r1"), vec![out]));
    }

    #[test]
    fn nested_json_data_is_flattened_row_major() {
        let body = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#;
        let req = decode_request(body, None).unwrap();
        assert_eq!(req.inputs[0].data, vec![1.0, 2.0, 3.0, 4.5]);
        assert!(req.outputs.is_empty() && !req.binary_output && req.id.is_none());
    }

    #[test]
    fn bad_bodies_are_refused_with_what_was_wrong() {
        let cases: [(&[u8], Option<usize>, &str); 9] = [
            (b"{", None, "not valid OIP v2 JSON"),
            (br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT64","data":[1,2]}]}"#, None, "datatype INT64"),
            (br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#, None, "has 2 values"),
            (br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#, None, "negative"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#, None, "not an FP32"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#, None, "neither data"),
            (
                br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}1234"#,
                Some(91),
                "only 4 remain",
            ),
            (
                br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}]}1234"#,
                Some(91),
                "needs 8",
            ),
            (b"{}", Some(100), "truncated"),
        ];
        for (body, hl, want) in cases {
            let e = decode_request(body, hl).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(body));
        }
        let (mut body, hl) = encode_request("r", &[tensor()], None, true);
        body.extend_from_slice(&[1, 2, 3, 4]);
        let e = decode_request(&body, hl).unwrap_err().to_string();
        assert!(e.contains("4 bytes of binary data belong to no input"), "{e}");
    }

    #[test]
    fn bytes_tensors_round_trip_as_json_strings_and_length_prefixed_binary() {
        let text = Tensor::bytes("text", vec![2], vec![b"a gorgeous movie .".to_vec(), "d\u{e9}j\u{e0} vu".into()]);
        for binary in [false, true] {
            let (body, hl) = encode_request("r", std::slice::from_ref(&text), Some("logits"), binary);
            let req = decode_request(&body, hl).unwrap();
            assert_eq!(req.inputs, vec![text.clone()], "binary={binary}");
            assert_eq!(req.inputs[0].texts("input").unwrap(), ["a gorgeous movie .", "d\u{e9}j\u{e0} vu"]);
            let n = hl.unwrap_or(body.len());
            let json: Value = serde_json::from_slice(&body[..n]).unwrap();
            assert_eq!(json["inputs"][0]["datatype"], "BYTES");
            if binary {
                assert_eq!(json["inputs"][0]["parameters"]["binary_data_size"], 4 + 18 + 4 + 9);
                assert_eq!(&body[n..n + 4], &[18, 0, 0, 0]);
            } else {
                assert_eq!(json["inputs"][0]["data"][0], "a gorgeous movie .");
            }
        }
        // The spec's own JSON form, nested data too.
        let body = br#"{"inputs":[{"name":"text","datatype":"BYTES","shape":[1,1],"data":[["a sentence"]]}]}"#;
        assert_eq!(decode_request(body, None).unwrap().inputs[0].bytes, Some(vec![b"a sentence".to_vec()]));
    }

    #[test]
    fn bad_bytes_tensors_are_refused_naming_the_input_and_element() {
        let binary = |raw: &[u8], shape: &str| {
            let json = format!(
                r#"{{"inputs":[{{"name":"text","shape":{shape},"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
                raw.len()
            );
            decode_request(&[json.as_bytes(), raw].concat(), Some(json.len()))
        };
        let e = |r: Result<InferRequest, WireError>| r.unwrap_err().to_string();
        let r = binary(&[9, 0, 0, 0, b'a', b'b'], "[1]");
        assert!(e(r).contains("element 0's length prefix says 9 bytes but only 2 remain"));
        let r = binary(&[1, 0, 0, 0, b'a', 2, 0], "[2]");
        assert!(e(r).contains("element 1 of 2 has no 4-byte length prefix"));
        let r = binary(&[1, 0, 0, 0, b'a', b'b'], "[1]");
        assert!(e(r).contains("1 bytes after its 1 elements"));
        let r = binary(&[2, 0, 0, 0, b'a', 0xff], "[1]");
        let t = &r.unwrap().inputs[0];
        let why = t.texts("input").unwrap_err().to_string();
        assert!(why.contains("input 'text' element 0 is not UTF-8 text (invalid byte at offset 1)"), "{why}");
        let body = br#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["ok", 3]}]}"#;
        let why = e(decode_request(body, None));
        assert!(why.contains("input 'text': element 1 is 3, not a string"), "{why}");
        let body = br#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","data":["ok"]}]}"#;
        assert!(e(decode_request(body, None)).contains("has 1 values but its shape [2] needs 2"));
    }
}
