//! Runs one datacenter experiment with `key=value` settings (see
//! `homa_sim::datacenter::DcConfig::KEYS`) and prints its table; `homa sim` is the full
//! tool. With `SHOW_BACKLOG` set, also prints the backlog samples.
//! `cargo run --release -p homa-sim --example datacenter -- workload=w4 load=0.8`

use homa_sim::datacenter::{run, DcConfig};

fn main() {
    let mut cfg = DcConfig::default();
    for arg in std::env::args().skip(1) {
        let Some((k, v)) = arg.split_once('=') else {
            eprintln!("expected key=value, got {arg:?}");
            std::process::exit(2);
        };
        if let Err(e) = cfg.set(k, v) {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
    match run(&cfg) {
        Ok(r) => {
            print!("{}", r.table());
            if std::env::var_os("SHOW_BACKLOG").is_some() {
                for (t, b) in &r.backlog {
                    println!(
                        "  backlog at {:.1} ms: {:.1} MB",
                        *t as f64 / 1e6,
                        *b as f64 / 1e6
                    );
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
