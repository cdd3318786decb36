//! Inputs from the file system: image files named directly or found in folders, and labeled
//! folders (`labels.csv` with header `file,label`, label = class index). Errors name the
//! file, and for labels the line, that is wrong.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("no images (.jpg, .jpeg, .png) in folder {path}")]
    NoImages { path: PathBuf },
    #[error("{path} line {line}: {msg}")]
    Labels { path: PathBuf, line: usize, msg: String },
    #[error("{path}: {msg}")]
    Kind { path: PathBuf, msg: String },
}

const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Files are taken as they are (whatever their extension: a bad one fails at decoding);
/// folders give their image files, sorted, not recursing. A folder without images is an error.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DatasetError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = list_images(p)?;
            if found.is_empty() {
                return Err(DatasetError::NoImages { path: p.clone() });
            }
            out.append(&mut found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(DatasetError::Missing { path: p.clone() });
        }
    }
    Ok(out)
}

/// The image files directly in `dir`, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let read = |source| DatasetError::Read { path: dir.to_owned(), source };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.is_file() && is_image(&path) {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// One labeled input: an image file, or a line of text (from a TSV, named `FILE:LINE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labeled {
    pub path: PathBuf,
    pub label: usize,
    /// A text input's text (then `path` names the TSV and its line).
    pub text: Option<String>,
}

impl Labeled {
    /// The input's bytes: the text, or the file's contents.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        match &self.text {
            Some(t) => Ok(t.as_bytes().to_vec()),
            None => std::fs::read(&self.path).map_err(|e| format!("cannot read: {e}")),
        }
    }

    /// How outputs name the input: the file's name, or `FILE:LINE` for text.
    pub fn name(&self) -> String {
        match &self.text {
            Some(_) => self.path.display().to_string(),
            None => self
                .path
                .file_name()
                .map_or_else(|| self.path.display().to_string(), |f| f.to_string_lossy().into_owned()),
        }
    }
}

/// The labeled inputs of `--data` for `model`'s cascade: a TSV of sentences for a text
/// model, a folder with labels.csv for an image model; the other kind is an error naming both.
pub fn read_data(data: &Path, model: &crate::model::Model) -> Result<Vec<Labeled>, DatasetError> {
    use crate::model::manifest::Kind;
    match (model.kind(), is_text_data(data)) {
        (Kind::Text, true) => read_tsv(data, model.classes.len(), &model.classes),
        (Kind::Image, false) => read_labels(data, model.classes.len()),
        (kind, _) => Err(DatasetError::Kind {
            path: data.to_owned(),
            msg: format!(
                "the cascade's models take {kind} input ({}); {}",
                model.manifest.path.display(),
                if kind == Kind::Text {
                    "give a .tsv file of labeled sentences"
                } else {
                    "give a folder of images with labels.csv"
                }
            ),
        }),
    }
}

/// Whether `--data` names a text data set (a `.tsv` file) rather than a folder of images.
pub fn is_text_data(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
}

/// Reads a GLUE-style TSV of labeled sentences: a header naming the columns, `label` and one
/// of `sentence`, `content`, `text` (in either order: `label<TAB>sentence` as SST-2's train
/// file, `sentence<TAB>label`), then a row per input. A label is a class index below
/// `classes` or one of `class_names`. A bad header, a row without both columns or a bad label
/// is an error naming the line; a row whose sentence is empty is kept and fails as an input
/// (named, counted), so every other row is still answered.
pub fn read_tsv(path: &Path, classes: usize, class_names: &[String]) -> Result<Vec<Labeled>, DatasetError> {
    if !path.is_file() {
        return Err(DatasetError::Missing { path: path.to_owned() });
    }
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Read { path: path.to_owned(), source })?;
    let err = |line: usize, msg: String| DatasetError::Labels { path: path.to_owned(), line, msg };
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        err(line, format!("not UTF-8 text (invalid byte at offset {})", e.valid_up_to()))
    })?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let (label_col, text_col) = match lines.next() {
        Some((n, h)) => {
            let cols: Vec<String> =
                h.trim_start_matches('\u{feff}').split('\t').map(|c| c.trim().to_ascii_lowercase()).collect();
            let find = |names: &[&str]| cols.iter().position(|c| names.contains(&c.as_str()));
            match (find(&["label"]), find(&["sentence", "content", "text"])) {
                (Some(l), Some(t)) if cols.len() == 2 => (l, t),
                _ => {
                    return Err(err(
                        n,
                        format!("header is '{h}', expected two tab-separated columns: label and sentence (or content, text), in either order"),
                    ))
                }
            }
        }
        None => return Err(err(1, "the file is empty; expected a header 'label<TAB>sentence'".into())),
    };
    let mut out = Vec::new();
    for (n, line) in lines {
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() != 2 {
            return Err(err(n, format!("{} tab-separated column(s), expected 2 (label and sentence)", cols.len())));
        }
        let raw = cols[label_col].trim();
        let label = match raw.parse::<usize>() {
            Ok(l) if l < classes => l,
            Ok(l) => return Err(err(n, format!("label {l} is out of range (the model has {classes} classes)"))),
            Err(_) => class_names.iter().position(|c| c.eq_ignore_ascii_case(raw)).ok_or_else(|| {
                err(
                    n,
                    format!(
                        "label '{raw}' is neither a class index nor one of the class names ({})",
                        class_names.join(", ")
                    ),
                )
            })?,
        };
        let name = PathBuf::from(format!("{}:{n}", path.display()));
        out.push(Labeled { path: name, label, text: Some(cols[text_col].to_owned()) });
    }
    if out.is_empty() {
        return Err(err(1, "no labeled sentences are listed".into()));
    }
    Ok(out)
}

/// Reads `DIR/labels.csv`. Every row must name a file (relative to DIR) and a class index
/// below `classes`; a file listed twice, a missing one, a bad header or row is an error.
pub fn read_labels(dir: &Path, classes: usize) -> Result<Vec<Labeled>, DatasetError> {
    let path = dir.join("labels.csv");
    if !dir.is_dir() {
        return Err(DatasetError::Missing { path: dir.to_owned() });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| DatasetError::Read { path: path.clone(), source })?;
    parse_labels(&text, dir, &path, classes)
}

/// Every image in `dir` without labels (`calibrate --agreement`): labels.csv, if there is one,
/// is not read; each image gets label 0 until the caller sets the reference answer.
pub fn unlabeled(dir: &Path) -> Result<Vec<Labeled>, DatasetError> {
    if !dir.is_dir() {
        return Err(DatasetError::Missing { path: dir.to_owned() });
    }
    let found = list_images(dir)?;
    if found.is_empty() {
        return Err(DatasetError::NoImages { path: dir.to_owned() });
    }
    Ok(found.into_iter().map(|path| Labeled { path, label: 0, text: None }).collect())
}

/// A calibration folder's labels must match its images: every image in `dir` listed in
/// labels.csv (a listed file that is missing is already an error of `read_labels`).
pub fn check_every_image_listed(dir: &Path, items: &[Labeled]) -> Result<(), DatasetError> {
    let listed: std::collections::HashSet<&Path> = items.iter().map(|i| i.path.as_path()).collect();
    let extra: Vec<PathBuf> = list_images(dir)?.into_iter().filter(|p| !listed.contains(p.as_path())).collect();
    match extra.first() {
        None => Ok(()),
        Some(first) => Err(DatasetError::Labels {
            path: dir.join("labels.csv"),
            line: 1,
            msg: format!(
                "the labels do not match the images: {} image(s) in {} are not listed, e.g. {}; list them, move them out, or calibrate without labels (--agreement)",
                extra.len(),
                dir.display(),
                first.file_name().map_or(String::new(), |f| f.to_string_lossy().into_owned())
            ),
        }),
    }
}

fn parse_labels(text: &str, dir: &Path, path: &Path, classes: usize) -> Result<Vec<Labeled>, DatasetError> {
    let err = |line: usize, msg: String| DatasetError::Labels { path: path.to_owned(), line, msg };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    match lines.next() {
        Some((_, h)) if h.trim().trim_start_matches('\u{feff}') == "file,label" => {}
        Some((n, h)) => return Err(err(n, format!("header is '{h}', expected 'file,label'"))),
        None => return Err(err(1, "the file is empty; expected the header 'file,label'".into())),
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let Some((file, label)) = line.rsplit_once(',') else {
            return Err(err(n, format!("'{line}' is not 'file,label'")));
        };
        let file = file.trim();
        let label: usize =
            label.trim().parse().map_err(|_| err(n, format!("label '{}' is not a class index", label.trim())))?;
        if label >= classes {
            return Err(err(n, format!("label {label} is out of range (the model has {classes} classes)")));
        }
        if file.is_empty() {
            return Err(err(n, "the file name is empty".into()));
        }
        if !seen.insert(file.to_owned()) {
            return Err(err(n, format!("{file} is listed twice")));
        }
        let p = dir.join(file);
        if !p.is_file() {
            return Err(err(n, format!("{} does not exist", p.display())));
        }
        out.push(Labeled { path: p, label, text: None });
    }
    if out.is_empty() {
        return Err(err(1, "no labeled images are listed".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"x").unwrap();
        std::fs::write(dir.path().join("b.png"), b"x").unwrap();
        let p = dir.path().join("labels.csv");
        let ok = parse_labels("file,label\na.jpg,3\r\nb.png, 999\n\n", dir.path(), &p, 1000).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].label, 999);
        let cases = [
            ("name,class\n", 1, "header"),
            ("", 1, "empty"),
            ("file,label\na.jpg,cat\n", 2, "'cat'"),
            ("file,label\na.jpg,3\nb.png,1000\n", 3, "out of range"),
            ("file,label\nc.jpg,1\n", 2, "does not exist"),
            ("file,label\na.jpg\n", 2, "not 'file,label'"),
            ("file,label\na.jpg,1\na.jpg,2\n", 3, "twice"),
            ("file,label\n", 1, "no labeled"),
        ];
        for (text, line, want) in cases {
            let e = parse_labels(text, dir.path(), &p, 1000).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, DatasetError::Labels { line: l, .. } if l == line), "{text:?}: {msg}");
            assert!(msg.contains(want) && msg.contains("labels.csv"), "{text:?}: {msg}");
        }
    }

    #[test]
    fn an_image_missing_from_the_labels_is_named_and_unlabeled_folders_list_every_image() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.jpg", "b.jpg", "c.png"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::write(dir.path().join("labels.csv"), "file,label\na.jpg,1\nb.jpg,2\n").unwrap();
        let items = read_labels(dir.path(), 10).unwrap();
        let e = check_every_image_listed(dir.path(), &items).unwrap_err().to_string();
        assert!(e.contains("do not match") && e.contains("c.png") && e.contains("labels.csv"), "{e}");
        std::fs::write(dir.path().join("labels.csv"), "file,label\na.jpg,1\nb.jpg,2\nc.png,3\n").unwrap();
        check_every_image_listed(dir.path(), &read_labels(dir.path(), 10).unwrap()).unwrap();
        let all = unlabeled(dir.path()).unwrap();
        assert_eq!(all.len(), 3);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(unlabeled(empty.path()), Err(DatasetError::NoImages { .. })));
    }

    #[test]
    fn folders_give_sorted_images_and_empty_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.JPG", "a.png", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        let found = collect_inputs(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = found.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["a.png", "b.JPG"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(collect_inputs(&[empty.path().to_owned()]), Err(DatasetError::NoImages { .. })));
        assert!(matches!(collect_inputs(&[dir.path().join("nope.jpg")]), Err(DatasetError::Missing { .. })));
    }
}
