//! The `edgecascade` command: parses the command line (clap) and dispatches to a subcommand in
//! `cmd/`, then turns how it ended into an exit code (0 ok; 1 the command could not run; 2 a bad
//! command line; 3 some inputs failed and were reported; 4 every input answered, some locally,
//! marked degraded, because the host could not answer them).

mod cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use cmd::Outcome;
use std::process::ExitCode;

/// `--version`: the crate's version, the git commit it was built from and the target (build.rs).
const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("EDGECASCADE_GIT_COMMIT"), ", ", env!("EDGECASCADE_TARGET"), ")");

#[derive(Parser)]
#[command(name = "edgecascade", version = VERSION, about = "Early-exit model cascades for edge devices")]
#[command(after_help = "Exit codes: 0 ok; 1 the command could not run; 2 a bad command line; \
                        3 some inputs failed; 4 every input answered, some locally, marked degraded.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    runner: cmd::RunnerArgs,
    #[command(flatten)]
    verbosity: cmd::Verbosity,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (files or folders) with the cascade, printing each answer.
    Classify(cmd::classify::ClassifyArgs),
    /// The main job: the host (large model) and the device (small model) joined by a real
    /// serial link (a pseudo-terminal pair), classifying the demo photos or a labeled folder.
    Demo(cmd::demo::DemoArgs),
    /// Serve the cascade's last stage (the large model) to devices over a link, and/or over
    /// the Open Inference Protocol v2 (HTTP).
    Host(cmd::host::HostArgs),
    /// Run the cascade on this device, offloading unsure inputs to a host over a link.
    Run(cmd::run::RunArgs),
    /// Choose the threshold from labeled data: sweep every metric, with and without ensembling
    /// and temperature scaling, price each point, and write the chosen one into a new config.
    Calibrate(cmd::calibrate::CalibrateArgs),
    /// Compare a results log of `run` or `demo` with the calibration: forward rate, drift,
    /// compute saved, per-stage figures.
    Report(cmd::report::ReportArgs),
    /// List the board profiles; show the board detected here, its power sensor and a live reading.
    Boards(cmd::boards::BoardsArgs),
    /// Energy per inference and latency per stage, MLPerf Tiny style: several runs, each at
    /// least a minimum time and number of inferences over a labeled folder, the local cascade.
    Bench(cmd::bench::BenchArgs),
    /// Measure each model's and the cascade's top-1 accuracy and cost on a labeled folder.
    Eval(cmd::eval::EvalArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.verbosity.init_logger();
    // eval and calibrate spread images over the cores, one thread each.
    cli.runner.apply(matches!(cli.command, Command::Eval(_)));
    let result = match cli.command {
        Command::Classify(a) => cmd::classify::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Host(a) => cmd::host::run(a).map(|()| Outcome::default()),
        Command::Run(a) => cmd::run::run(a),
        Command::Calibrate(a) => cmd::calibrate::run(a).map(Outcome::failed),
        Command::Report(a) => cmd::report::run(a).map(Outcome::failed),
        Command::Boards(a) => cmd::boards::run(a).map(|()| Outcome::default()),
        Command::Bench(a) => cmd::bench::run(a).map(Outcome::failed),
        Command::Eval(a) => cmd::eval::run(a).map(Outcome::failed),
    };
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => cmd::error_exit(&e, matches.subcommand_name().unwrap_or_default()),
    }
}
