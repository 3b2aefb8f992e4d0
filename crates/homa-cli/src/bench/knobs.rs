//! The Homa protocol settings a benchmark run may change from the command line
//! (`--homa-*`): what an emulated or real link needs (its RTT-bytes as unscheduled bytes
//! and grant window, its rate for the pacer, its MTU, how many priority levels the
//! switch has). Unset, each keeps the socket library's default (the kernel's).

use homa_proto::Config;
use homa_socket::SocketConfig;

use super::error::BenchError;

/// `--homa-priorities`, `--homa-unsched-bytes`, `--homa-window`, `--homa-link-mbps`,
/// `--homa-mtu`, `--homa-set`: shared by `homa bench`, `homa server` and `homa client`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub(crate) struct HomaKnobs {
    /// Priority levels Homa uses, 1..=8 (`num_priorities`; 1 puts every packet at level
    /// 0: what priorities buy) [default: 8].
    #[arg(long = "homa-priorities", value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub(crate) priorities: Option<u8>,
    /// Unscheduled bytes of a message to a peer off loopback (`unsched_bytes`; the
    /// path's RTT-bytes) [default: 40000].
    #[arg(long = "homa-unsched-bytes", value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) unsched_bytes: Option<u32>,
    /// Fixed grant window per message in bytes (`window`; 0 = dynamic) [default: 0].
    #[arg(long = "homa-window", value_name = "BYTES")]
    pub(crate) window: Option<u32>,
    /// Rate of this host's link in Mbit/s, for the pacer and FIFO grants (`link_mbps`)
    /// [default: 25000].
    #[arg(long = "homa-link-mbps", value_name = "MBPS", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub(crate) link_mbps: Option<u32>,
    /// MTU of paths off loopback; Homa sizes its packets to it [default: 1500].
    #[arg(long = "homa-mtu", value_name = "BYTES", value_parser = clap::value_parser!(u32).range(576..=65_536))]
    pub(crate) mtu: Option<u32>,
    /// Any other protocol tunable by its sysctl name, e.g. `resend_ticks=50` (repeatable;
    /// names and ranges: homa_proto's `config::TUNABLES`), applied after the options
    /// above.
    #[arg(long = "homa-set", value_name = "NAME=VALUE", value_parser = parse_setting)]
    pub(crate) set: Vec<(&'static str, u64)>,
}

/// Parses `--homa-set NAME=VALUE`: a known tunable's name and a whole number (its range
/// is checked when the configuration is built).
pub(crate) fn parse_setting(s: &str) -> Result<(&'static str, u64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE (e.g. resend_ticks=50)"))?;
    let tunable = homa_proto::config::TUNABLES
        .iter()
        .find(|t| t.name == name.trim())
        .ok_or_else(|| {
            format!("`{name}` is not a Homa tunable (see homa_proto's config::TUNABLES)")
        })?;
    let value = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number (for {})", tunable.name))?;
    Ok((tunable.name, value))
}

impl HomaKnobs {
    /// The protocol's tunables: the kernel's defaults with the settings given.
    ///
    /// # Errors
    ///
    /// [`BenchError::Option`] if the protocol rejects a value (outside its range).
    pub(crate) fn protocol(&self) -> Result<Config, BenchError> {
        let mut b = Config::builder();
        if let Some(n) = self.priorities {
            b = b.num_priorities(n);
        }
        if let Some(n) = self.unsched_bytes {
            b = b.unsched_bytes(n);
        }
        if let Some(n) = self.window {
            b = b.window(n);
        }
        if let Some(n) = self.link_mbps {
            b = b.link_mbps(n);
        }
        for &(name, value) in &self.set {
            b.set(name, value)
                .map_err(|e| BenchError::option("--homa-set", e.to_string()))?;
        }
        b.build()
            .map_err(|e| BenchError::option("--homa-*", e.to_string()))
    }

    /// Applies the settings given to `config`.
    ///
    /// # Errors
    ///
    /// As [`protocol`](Self::protocol).
    pub(crate) fn apply(&self, config: SocketConfig) -> Result<SocketConfig, BenchError> {
        let config = config.protocol(self.protocol()?);
        Ok(match self.mtu {
            Some(mtu) => config.mtu(mtu as usize),
            None => config,
        })
    }

    /// The settings given, as `name=value` pairs (empty: all defaults).
    pub(crate) fn describe(&self) -> Vec<(&'static str, u64)> {
        [
            ("priorities", self.priorities.map(u64::from)),
            ("unsched_bytes", self.unsched_bytes.map(u64::from)),
            ("window", self.window.map(u64::from)),
            ("link_mbps", self.link_mbps.map(u64::from)),
            ("mtu", self.mtu.map(u64::from)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .chain(self.set.iter().copied())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_knobs_change_nothing_and_set_ones_are_described() {
        assert!(HomaKnobs::default().describe().is_empty());
        assert!(HomaKnobs::default().apply(SocketConfig::default()).is_ok());
        let k = HomaKnobs {
            priorities: Some(1),
            unsched_bytes: Some(1_250),
            ..HomaKnobs::default()
        };
        assert_eq!(
            k.describe(),
            vec![("priorities", 1), ("unsched_bytes", 1_250)]
        );
        assert!(k.apply(SocketConfig::default()).is_ok());
    }

    #[test]
    fn any_tunable_can_be_set_by_name() {
        assert_eq!(parse_setting("resend_ticks=50"), Ok(("resend_ticks", 50)));
        assert!(parse_setting("resend_ticks").is_err());
        assert!(parse_setting("no_such=1").is_err());
        assert!(parse_setting("timeout_ticks=-1").is_err());
        let k = HomaKnobs {
            set: vec![("resend_ticks", 50), ("timeout_ticks", 5000)],
            ..HomaKnobs::default()
        };
        let c = k.protocol().unwrap();
        assert_eq!((c.resend_ticks(), c.timeout_ticks()), (50, 5000));
        assert_eq!(
            k.describe(),
            vec![("resend_ticks", 50), ("timeout_ticks", 5000)]
        );
        let bad = HomaKnobs {
            set: vec![("max_overcommit", 9)],
            ..HomaKnobs::default()
        };
        assert!(bad.protocol().is_err());
    }

    #[test]
    fn a_value_the_protocol_rejects_is_a_typed_error() {
        let k = HomaKnobs {
            window: Some(u32::MAX),
            ..HomaKnobs::default()
        };
        let e = k.apply(SocketConfig::default()).unwrap_err();
        assert!(e.to_string().contains("window"), "{e}");
    }
}
