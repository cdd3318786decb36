//! The int8 rewrite's accuracy check (issue 6, item 2): on `../shared/data/imagenet-val-a`
//! (650 labeled ImageNet validation images, not in the repository), the rewritten Lite0 int8
//! model's top-1 class must equal ONNX Runtime's on the same file (models/reference/) for at
//! least 99% of the images.
//!
//! Ignored by default (it needs the data set and takes about a minute):
//!
//!     cargo test --test int8_accuracy -- --ignored --nocapture
//!
//! `EDGECASCADE_VAL_A=DIR` points it at another copy of the data. Without the data it passes
//! with a loud SKIPPED message (a fresh clone has no data set).

mod common;

use common::root;
use edgecascade::core::policy::argmax;
use edgecascade::model::Model;
use edgecascade::tune::dataset;
use edgecascade::tune::eval;
use std::collections::HashMap;
use std::path::PathBuf;

#[test]
#[ignore = "needs ../shared/data/imagenet-val-a; run with --ignored"]
fn rewritten_int8_top1_equals_onnxruntime_on_val_a() {
    let data = std::env::var_os("EDGECASCADE_VAL_A")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data/imagenet-val-a"));
    if !data.join("labels.csv").is_file() {
        eprintln!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
        eprintln!("!!! SKIPPED: int8 accuracy check: no data set at {} (set EDGECASCADE_VAL_A)", data.display());
        eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n");
        return;
    }
    let model = Model::load(&root().join("models/efficientnet-lite0-int8.toml"), &Default::default()).unwrap();
    let items = dataset::read_labels(&data, 1000).unwrap();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (records, failures) = eval::collect(&[&model], &items, jobs, None);
    assert!(failures.is_empty(), "{failures:?}");

    let reference =
        std::fs::read_to_string(root().join("models/reference/ort-efficientnet-lite0-int8-imagenet-val-a.csv"))
            .unwrap();
    let ort: HashMap<String, (usize, usize)> = reference
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect();
    let (mut same, mut ours_right, mut ort_right, mut differ) = (0, 0, 0, vec![]);
    for r in &records {
        let file = PathBuf::from(&r.input).file_name().unwrap().to_string_lossy().into_owned();
        let &(label, ort_top1) =
            ort.get(&file).unwrap_or_else(|| panic!("{file} is not in ONNX Runtime's predictions"));
        assert_eq!(label, r.label, "{file}: labels differ");
        // The first of equal maxima, as numpy's argmax (ONNX Runtime's reference) and `eval`
        // take it: int8 logits are whole quantization steps, so exact ties happen.
        let top1 = argmax(&r.logits[0]);
        if top1 == ort_top1 {
            same += 1;
        } else {
            differ.push(format!("{file}: ours {top1}, ORT {ort_top1}"));
        }
        ours_right += (top1 == label) as usize;
        ort_right += (ort_top1 == label) as usize;
    }
    let n = records.len();
    assert_eq!(n, ort.len(), "ONNX Runtime's predictions cover {} images, the data set {n}", ort.len());
    let pct = |k: usize| 100.0 * k as f64 / n as f64;
    eprintln!(
        "int8 rewrite on {}: top-1 equal to ONNX Runtime's on {same}/{n} images ({:.2}%); top-1 accuracy {:.2}% (ORT {:.2}%); differing: {differ:?}",
        data.display(),
        pct(same),
        pct(ours_right),
        pct(ort_right)
    );
    assert!(same * 100 >= n * 99, "top-1 equal to ONNX Runtime's on only {same} of {n} images");
}
