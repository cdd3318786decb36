//! The results log of `run`, `demo` and `classify --log`: one JSON line per input, appended,
//! flushed and synced to the disk before the next input, each stamped with the wall-clock time
//! and the run's id. It survives restarts and power cuts: a run appends after the last line
//! (its sequence numbers go on from there), a torn last line (a power cut mid-write) is closed
//! with a newline first, so the next line starts whole, and `report` skips torn lines with a
//! warning. With a size limit the log rotates (`results.jsonl` -> `results.jsonl.1` -> ...).

use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Rotation: start a new file when the current one would pass `max_bytes`, keeping `keep`
/// older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: usize,
}

/// What opening found in an existing log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The last line was torn (no newline at its end): closed with one.
    pub torn: bool,
    /// The last complete line's sequence number.
    pub last_seq: Option<u64>,
    /// The last complete line's input name.
    pub last_input: Option<String>,
}

pub struct ResultsLog {
    path: PathBuf,
    file: File,
    len: u64,
    run: String,
    seq: u64,
    rotation: Option<Rotation>,
}

/// How much of a log's end is read to find its last line.
const TAIL: u64 = 64 * 1024;

impl ResultsLog {
    /// Opens (or creates) the log at `path` for appending; `run` names this run in every line.
    pub fn open(path: &Path, run: &str, rotation: Option<Rotation>) -> std::io::Result<(ResultsLog, Found)> {
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(TAIL);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.read_to_end(&mut tail)?;
        let mut found = Found::default();
        let mut len = len;
        if tail.last().is_some_and(|&b| b != b'\n') {
            found.torn = true;
            file.write_all(b"\n")?;
            file.sync_data()?;
            len += 1;
        }
        // The last complete line that parses (a torn line never does).
        let text = String::from_utf8_lossy(&tail);
        let last = text.lines().rev().filter_map(|l| serde_json::from_str::<Value>(l).ok()).next();
        if let Some(v) = last {
            found.last_seq = v.get("seq").and_then(Value::as_u64);
            found.last_input = v.get("input").and_then(Value::as_str).map(str::to_owned);
        }
        let log = ResultsLog {
            path: path.to_owned(),
            file,
            len,
            run: run.to_owned(),
            seq: found.last_seq.unwrap_or(0),
            rotation,
        };
        Ok((log, found))
    }

    /// The next input's sequence number (they go on across runs).
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Appends `line` (a JSON object) with `time` (UTC, RFC 3339) and `run` added, then
    /// flushes and syncs it to the disk.
    pub fn append(&mut self, line: Value) -> std::io::Result<()> {
        let mut obj = match line {
            Value::Object(o) => o,
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        obj.insert("time".into(), Value::String(now_rfc3339()));
        obj.insert("run".into(), Value::String(self.run.clone()));
        let mut bytes = serde_json::to_vec(&Value::Object(obj)).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        if let Some(r) = self.rotation {
            if self.len > 0 && self.len + bytes.len() as u64 > r.max_bytes {
                self.rotate(r)?;
            }
        }
        self.file.write_all(&bytes)?;
        self.file.flush()?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// `log` -> `log.1` -> ... -> `log.keep` (the oldest dropped), then a new `log`.
    fn rotate(&mut self, r: Rotation) -> std::io::Result<()> {
        let numbered = |i: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        if r.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for i in (1..r.keep).rev() {
                if numbered(i).exists() {
                    std::fs::rename(numbered(i), numbered(i + 1))?;
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.file = OpenOptions::new().create(true).read(true).append(true).open(&self.path)?;
        self.len = 0;
        log::info!("results log {} rotated", self.path.display());
        Ok(())
    }
}

/// An id for this run: its start time and the process id, e.g. `20261130T120503Z-1f2a`.
pub fn run_id() -> String {
    let now = jiff::Timestamp::now();
    format!("{}-{:x}", now.strftime("%Y%m%dT%H%M%SZ"), std::process::id())
}

/// The wall-clock time, UTC, to the millisecond.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Millisecond).unwrap_or(now).to_string()
}

/// Whether `line` is a torn JSON line (cut short by a power cut): valid up to its end, which
/// came too soon.
pub fn is_torn(line: &str) -> bool {
    matches!(serde_json::from_str::<Value>(line), Err(e) if e.is_eof())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect()
    }

    #[test]
    fn every_line_has_a_time_and_the_run_and_sequence_numbers_go_on_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        for run in ["a", "b"] {
            let (mut log, _) = ResultsLog::open(&p, run, None).unwrap();
            for _ in 0..2 {
                let seq = log.next_seq();
                log.append(json!({ "seq": seq, "input": "x.jpg" })).unwrap();
            }
        }
        let l = lines(&p);
        assert_eq!(l.len(), 4);
        let v: Vec<Value> = l.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(v.iter().map(|v| v["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(v[0]["run"], "a");
        assert_eq!(v[3]["run"], "b");
        let t = v[0]["time"].as_str().unwrap();
        assert!(t.parse::<jiff::Timestamp>().is_ok() && t.ends_with('Z'), "{t}");
    }

    /// A power cut mid-line: the next run closes the torn line, continues after the last whole
    /// one, and its own lines are whole.
    #[test]
    fn a_torn_last_line_is_closed_and_the_next_lines_start_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(&p, "{\"seq\":7,\"input\":\"a.jpg\"}\n{\"seq\":8,\"input\":\"b.j").unwrap();
        let (mut log, found) = ResultsLog::open(&p, "r", None).unwrap();
        assert_eq!(found, Found { torn: true, last_seq: Some(7), last_input: Some("a.jpg".into()) });
        let seq = log.next_seq();
        log.append(json!({ "seq": seq, "input": "c.jpg" })).unwrap();
        let l = lines(&p);
        assert_eq!(l.len(), 3);
        assert!(is_torn(&l[1]));
        let v: Value = serde_json::from_str(&l[2]).unwrap();
        assert_eq!(v["seq"], 8);
        assert!(!is_torn("{\"seq\": 1}") && !is_torn("not json"));
    }

    #[test]
    fn the_log_rotates_past_its_size_keeping_the_older_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        let (mut log, _) = ResultsLog::open(&p, "r", Some(Rotation { max_bytes: 300, keep: 2 })).unwrap();
        for _ in 0..20 {
            let seq = log.next_seq();
            log.append(json!({ "seq": seq, "input": "some-image.jpg" })).unwrap();
        }
        let all: Vec<String> = [p.clone(), dir.path().join("r.jsonl.1"), dir.path().join("r.jsonl.2")]
            .iter()
            .flat_map(|f| lines(f))
            .collect();
        assert!(std::fs::metadata(&p).unwrap().len() <= 300);
        assert!(!dir.path().join("r.jsonl.3").exists());
        // The newest lines are kept, none is split across files.
        assert!(all.iter().all(|l| serde_json::from_str::<Value>(l).is_ok()));
        assert!(all.iter().any(|l| l.contains("\"seq\":20")));
    }
}
