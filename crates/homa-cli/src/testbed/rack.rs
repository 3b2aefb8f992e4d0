//! The emulated rack: `N` host namespaces, each joined by a veth pair to one switch
//! namespace that routes IPv4 and IPv6 between them, every egress shaped as a switch port
//! with eight strict priorities (see [`super::shaping`]).
//!
//! Addressing (the benchmarking ranges RFC 2544 and RFC 5180 set aside, so nothing here
//! can be mistaken for a real network): host `i`'s `eth0` is `198.18.i.2/24` and
//! `2001:2:0:i::2/64` (`i` in hex there), its switch port `p<i>` is `198.18.i.1` and
//! `2001:2:0:i::1`, the host's default gateway. One subnet per port, so the switch is a
//! router: each port is its own interface with its own egress qdisc, there is no
//! flooding or MAC learning to emulate, and nothing depends on the bridge module or on
//! `br_netfilter` calling the host's firewall.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use super::error::TestbedError;
use super::netns::{run_batch, run_checked, set_sysctl, Namespaces};
use super::shaping::{read_port_stats, PortShaping, PortStats};

/// The device name of every host's link, inside its namespace.
pub(crate) const HOST_DEV: &str = "eth0";

/// The MTU of every emulated link.
pub(crate) const MTU: u32 = 1500;

/// The switch port toward host `i`.
pub(crate) fn switch_port(i: usize) -> String {
    format!("p{i}")
}

/// Host `i`'s IPv4 address.
pub(crate) fn host_ipv4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, i as u8, 2)
}

/// The switch's IPv4 address on the port toward host `i` (the host's gateway).
pub(crate) fn switch_ipv4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, i as u8, 1)
}

/// Host `i`'s IPv6 address.
pub(crate) fn host_ipv6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, i as u16, 0, 0, 0, 2)
}

/// The switch's IPv6 address on the port toward host `i`.
pub(crate) fn switch_ipv6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, i as u16, 0, 0, 0, 1)
}

/// The `ip -n HOST -batch -` lines that make host `i`'s link: the veth pair (its peer
/// created directly in `switch_ns` as `p<i>`), addresses and default routes.
pub(crate) fn host_ip_batch(i: usize, switch_ns: &str) -> Vec<String> {
    let port = switch_port(i);
    vec![
        "link set lo up".to_string(),
        format!(
            "link add {HOST_DEV} mtu {MTU} type veth peer name {port} mtu {MTU} netns {switch_ns}"
        ),
        format!("link set {HOST_DEV} up"),
        format!("addr add {}/24 dev {HOST_DEV}", host_ipv4(i)),
        format!("addr add {}/64 dev {HOST_DEV} nodad", host_ipv6(i)),
        format!("route add default via {}", switch_ipv4(i)),
        format!("route add default via {}", switch_ipv6(i)),
    ]
}

/// The `ip -n SWITCH -batch -` lines that bring up the switch's ports and addresses.
pub(crate) fn switch_ip_batch(hosts: usize) -> Vec<String> {
    let mut lines = vec!["link set lo up".to_string()];
    for i in 0..hosts {
        let port = switch_port(i);
        lines.push(format!("link set {port} up"));
        lines.push(format!("addr add {}/24 dev {port}", switch_ipv4(i)));
        lines.push(format!("addr add {}/64 dev {port} nodad", switch_ipv6(i)));
    }
    lines
}

/// The segmentation offloads turned off on every veth end, so that every packet a switch
/// port sees is at most MTU-sized: `tso`, `gso` and `gro` are TCP's and the generic ones;
/// a veth also offers UDP segmentation (`tx-udp-segmentation`: a UDP GSO send, as Homa's
/// socket makes them, would cross the veth and the switch as one skb of up to 64 KB, which
/// a port's strict priority cannot preempt and its bfifo drops whole), fraglist GSO and
/// SCTP's, all on by default.
pub(crate) const OFFLOADS_OFF: [&str; 6] = [
    "tso",
    "gso",
    "gro",
    "tx-udp-segmentation",
    "tx-gso-list",
    "tx-sctp-segmentation",
];

/// The features of `ethtool -k` output that must read `off` after [`offloads_off_args`]:
/// every software or hardware segmentation of TCP, UDP, SCTP and fraglists.
pub(crate) const MUST_BE_OFF: [&str; 8] = [
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "tx-tcp-segmentation",
    "tx-tcp6-segmentation",
    "tx-udp-segmentation",
    "tx-gso-list",
    "tx-sctp-segmentation",
];

/// The arguments of the `ethtool` call that turns the segmentation offloads off on `dev`
/// ([`OFFLOADS_OFF`]).
pub(crate) fn offloads_off_args(dev: &str) -> Vec<String> {
    let mut args = vec!["-K".to_string(), dev.to_string()];
    for feature in OFFLOADS_OFF {
        args.push(feature.to_string());
        args.push("off".to_string());
    }
    args
}

/// The features of [`MUST_BE_OFF`] that `ethtool -k` output `features` shows as on (an
/// older kernel without a feature does not list it: not on).
pub(crate) fn offloads_still_on(features: &str) -> Vec<String> {
    features
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(name, value)| MUST_BE_OFF.contains(name) && value.starts_with("on"))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Sysctls set in every namespace before its links exist: no duplicate address detection
/// (addresses are usable at once, and the links' own link-local ones too).
const NAMESPACE_SYSCTLS: [(&str, &str); 2] = [
    ("net/ipv6/conf/all/accept_dad", "0"),
    ("net/ipv6/conf/default/accept_dad", "0"),
];

/// Sysctls set in the switch namespace: it routes.
const SWITCH_SYSCTLS: [(&str, &str); 2] = [
    ("net/ipv4/ip_forward", "1"),
    ("net/ipv6/conf/all/forwarding", "1"),
];

/// Where [`build`] stops on purpose when asked (`--inject-failure`), to test teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Stage {
    /// After the namespaces exist.
    Namespaces,
    /// After the links and addresses exist.
    Links,
    /// After the qdiscs are installed.
    Shaping,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Namespaces => "creating the namespaces",
            Stage::Links => "creating the links",
            Stage::Shaping => "shaping the links",
        }
    }
}

/// One emulated host.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// Its index, 0-based.
    pub(crate) index: usize,
    /// Its network namespace.
    pub(crate) netns: String,
    /// Its IPv4 address.
    pub(crate) ipv4: Ipv4Addr,
    /// Its IPv6 address.
    pub(crate) ipv6: Ipv6Addr,
}

impl Host {
    /// Its address in one IP version.
    pub(crate) fn addr(&self, ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(self.ipv6)
        } else {
            IpAddr::V4(self.ipv4)
        }
    }
}

/// The rack: its namespaces (deleted when it is dropped), hosts and shaping.
#[derive(Debug)]
pub(crate) struct Rack {
    /// The guard owning every namespace.
    pub(crate) namespaces: Namespaces,
    /// The switch's namespace.
    pub(crate) switch: String,
    /// The hosts, by index.
    pub(crate) hosts: Vec<Host>,
    /// How every egress is shaped.
    pub(crate) shaping: PortShaping,
}

impl Rack {
    /// Every shaped device, as (namespace, device): each host's `eth0`, then each switch
    /// port.
    pub(crate) fn shaped_devices(&self) -> Vec<(String, String)> {
        let mut devices: Vec<(String, String)> = self
            .hosts
            .iter()
            .map(|h| (h.netns.clone(), HOST_DEV.to_string()))
            .collect();
        devices.extend((0..self.hosts.len()).map(|i| (self.switch.clone(), switch_port(i))));
        devices
    }

    /// The `tc -s` counters of every shaped device (see [`Rack::shaped_devices`]): what the
    /// experiment reads before and after a run to report each port's and class's losses.
    pub(crate) fn port_stats(&self) -> Result<Vec<PortStats>, TestbedError> {
        self.shaped_devices()
            .iter()
            .map(|(netns, dev)| read_port_stats(netns, dev))
            .collect()
    }
}

/// Builds a rack of `hosts` hosts shaped by `shaping`, owned by `namespaces` (which
/// deletes everything if building fails). `inject` stops with an error after a stage.
pub(crate) fn build(
    namespaces: Namespaces,
    hosts: usize,
    shaping: PortShaping,
    inject: Option<Stage>,
) -> Result<Rack, TestbedError> {
    let stop_if = |stage: Stage| match inject {
        Some(s) if s == stage => Err(TestbedError::Injected {
            stage: stage.name(),
        }),
        _ => Ok(()),
    };
    let switch = namespaces.create("sw")?;
    let mut host_list = Vec::with_capacity(hosts);
    for index in 0..hosts {
        let netns = namespaces.create(&format!("h{index}"))?;
        host_list.push(Host {
            index,
            netns,
            ipv4: host_ipv4(index),
            ipv6: host_ipv6(index),
        });
    }
    let rack = Rack {
        namespaces,
        switch,
        hosts: host_list,
        shaping,
    };
    stop_if(Stage::Namespaces)?;

    for netns in std::iter::once(&rack.switch).chain(rack.hosts.iter().map(|h| &h.netns)) {
        for (key, value) in NAMESPACE_SYSCTLS {
            set_sysctl(netns, key, value)?;
        }
    }
    for (key, value) in SWITCH_SYSCTLS {
        set_sysctl(&rack.switch, key, value)?;
    }
    for host in &rack.hosts {
        run_batch("ip", &host.netns, &host_ip_batch(host.index, &rack.switch))?;
    }
    run_batch("ip", &rack.switch, &switch_ip_batch(hosts))?;
    stop_if(Stage::Links)?;

    for (netns, dev) in rack.shaped_devices() {
        run_checked(
            Command::new("ip")
                .args(["netns", "exec", &netns, "ethtool"])
                .args(offloads_off_args(&dev)),
        )?;
        let features =
            run_checked(Command::new("ip").args(["netns", "exec", &netns, "ethtool", "-k", &dev]))?;
        let on = offloads_still_on(&features);
        if !on.is_empty() {
            return Err(TestbedError::CheckFailed {
                check: "offloads",
                why: format!(
                    "{dev} in {netns} still has {} on: packets larger than the MTU would cross the switch",
                    on.join(", ")
                ),
            });
        }
        run_batch("tc", &netns, &shaping.tc_batch(&dev))?;
    }
    stop_if(Stage::Shaping)?;
    Ok(rack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_in_the_benchmarking_ranges_one_subnet_per_port() {
        assert_eq!(host_ipv4(0).to_string(), "198.18.0.2");
        assert_eq!(switch_ipv4(15).to_string(), "198.18.15.1");
        assert_eq!(host_ipv6(10).to_string(), "2001:2:0:a::2");
        assert_eq!(switch_ipv6(1).to_string(), "2001:2:0:1::1");
        for i in 0..16 {
            assert!(host_ipv4(i).octets()[..2] == [198, 18]);
            assert_eq!(host_ipv6(i).segments()[..2], [0x2001, 2]);
        }
    }

    #[test]
    fn host_batch_links_the_host_to_its_switch_port() {
        let lines = host_ip_batch(3, "homa-tb-9-sw");
        assert_eq!(
            lines,
            [
                "link set lo up",
                "link add eth0 mtu 1500 type veth peer name p3 mtu 1500 netns homa-tb-9-sw",
                "link set eth0 up",
                "addr add 198.18.3.2/24 dev eth0",
                "addr add 2001:2:0:3::2/64 dev eth0 nodad",
                "route add default via 198.18.3.1",
                "route add default via 2001:2:0:3::1",
            ]
        );
    }

    #[test]
    fn switch_batch_brings_up_every_port() {
        let lines = switch_ip_batch(2);
        assert_eq!(
            lines,
            [
                "link set lo up",
                "link set p0 up",
                "addr add 198.18.0.1/24 dev p0",
                "addr add 2001:2::1/64 dev p0 nodad",
                "link set p1 up",
                "addr add 198.18.1.1/24 dev p1",
                "addr add 2001:2:0:1::1/64 dev p1 nodad",
            ]
        );
    }

    #[test]
    fn offloads_off_covers_tcp_udp_and_generic_segmentation() {
        assert_eq!(
            offloads_off_args("p2").join(" "),
            "-K p2 tso off gso off gro off tx-udp-segmentation off tx-gso-list off \
             tx-sctp-segmentation off"
        );
    }

    #[test]
    fn a_segmentation_offload_left_on_is_found() {
        // `ethtool -k` of a veth before the call (trimmed), captured here.
        let before = "Features for p0:\ntcp-segmentation-offload: on\n\ttx-tcp-segmentation: on\n\
                      generic-segmentation-offload: on\ngeneric-receive-offload: off\n\
                      tx-gre-segmentation: on\ntx-udp-segmentation: on\ntx-gso-list: on\n\
                      large-receive-offload: off [fixed]\n";
        assert_eq!(
            offloads_still_on(before),
            [
                "tcp-segmentation-offload",
                "tx-tcp-segmentation",
                "generic-segmentation-offload",
                "tx-udp-segmentation",
                "tx-gso-list"
            ]
        );
        let after = "tcp-segmentation-offload: off\n\ttx-tcp-segmentation: off\n\
                     tx-udp-segmentation: off\ntx-gso-list: off\ntx-gre-segmentation: on\n\
                     tx-sctp-segmentation: off [requested on]\n";
        assert!(offloads_still_on(after).is_empty());
    }
}
