//! `homa`: measure Homa against TCP and UDP (`bench`, `server`, `client`) and study it at
//! datacenter scale (`sim`).

use clap::{Parser, Subcommand};

mod bench;
mod sim;
mod testbed;

/// Homa in Rust: benchmarks and the datacenter simulator.
#[derive(Debug, Parser)]
#[command(name = "homa", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark Homa against TCP and UDP on this host (loopback by default).
    Bench(Box<bench::BenchArgs>),
    /// Serve the benchmark's requests (for runs across processes or hosts).
    Server(Box<bench::ServerArgs>),
    /// Run the benchmark's measurements against `homa server` processes.
    Client(Box<bench::ClientArgs>),
    /// Simulate Homa in a datacenter network.
    Sim(Box<sim::SimArgs>),
    /// Emulate a rack in network namespaces (needs root) and check its links and priorities.
    Testbed(Box<testbed::TestbedArgs>),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::bench(*args),
        Command::Server(args) => bench::server(*args),
        Command::Client(args) => bench::client(*args),
        Command::Sim(args) => sim::run(*args),
        Command::Testbed(args) => testbed::run(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("homa: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
