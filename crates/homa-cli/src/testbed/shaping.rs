//! The emulated switch port: an `htb` tree with eight strict-priority leaf classes, one
//! `bfifo` per class, and `u32` filters on the IPv4 TOS byte / IPv6 traffic class; and the
//! parser of `tc -s qdisc show` / `tc -s class show`, which is the only place the
//! emulation's drops can be seen (a qdisc drop is silent to a UDP sender).
//!
//! The tree on every shaped device (each host's `eth0` and each switch port `pN`):
//!
//! ```text
//! 1:    htb root qdisc, default class 1:20
//! └ 1:1   rate = ceil = link
//!   ├ 1:10 … 1:17  level p = 0…7: rate link/800, ceil link, prio 7-p → bfifo 10: … 17:
//!   └ 1:20         control (ARP, IPv6 neighbour discovery, anything unmatched):
//!                  rate link/100, ceil link, prio 0 → bfifo 20:
//! ```
//!
//! htb serves a class's own `rate` before any borrowing, whatever its `prio`; `prio` only
//! orders the classes that borrow from 1:1. The leaves' own rates are therefore kept tiny
//! (together 1 % of the link), so nearly all of the link is handed out by `prio`: strict
//! priority, level 7 first. Class ids are hexadecimal in `tc`, so `1:10`…`1:17` and the
//! `default 20` of the root all mean 0x10…0x17 and 0x20.

use std::collections::BTreeMap;
use std::process::Command;

use super::error::TestbedError;
use super::netns::run_checked;

/// Homa's priority levels: 0 (lowest) … 7 (highest).
pub(crate) const LEVELS: u8 = 8;

/// The class that carries ARP, IPv6 neighbour discovery and anything no filter matches.
pub(crate) const CONTROL_CLASS: &str = "1:20";

/// The class every leaf borrows from, at the link rate.
pub(crate) const LINK_CLASS: &str = "1:1";

/// The DRR quantum of every class: one full frame (MTU 1500 + 14-byte Ethernet header).
/// Each level has its own `prio`, so the quantum only matters for bookkeeping; setting it
/// keeps htb from deriving a tiny one from the small leaf rates (and warning about it).
pub(crate) const QUANTUM_BYTES: u64 = 1514;

/// The IPv4 TOS byte (and IPv6 traffic class) of Homa priority level `level`: the level in
/// the top three bits.
pub(crate) fn tos(level: u8) -> u8 {
    (level & 7) << 5
}

/// The htb `prio` of level `level`: htb serves prio 0 first, Homa level 7 is the highest.
pub(crate) fn htb_prio(level: u8) -> u8 {
    7 - (level & 7)
}

/// The class id of level `level`'s leaf: `1:10` … `1:17`.
pub(crate) fn level_class(level: u8) -> String {
    format!("1:1{}", level & 7)
}

/// ICMPv6 types kept out of the data classes: router solicitation and advertisement,
/// neighbour solicitation and advertisement, redirect (IPv6's ARP).
const NEIGHBOUR_DISCOVERY_TYPES: [u8; 5] = [133, 134, 135, 136, 137];

/// How one device is shaped: the link rate and the buffer of each class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortShaping {
    /// The emulated link rate, bits per second (counted as htb counts: the IP packet plus
    /// the 14-byte Ethernet header; no preamble, gap or FCS).
    pub(crate) link_bps: u64,
    /// The `bfifo` limit of each class, bytes. Every class has the whole buffer: one
    /// priority can fill it, as in a switch whose shared buffer one port's class may use.
    pub(crate) buffer_bytes: u64,
}

impl PortShaping {
    /// The guaranteed `rate` of each level's leaf: 1 % of the link split over the eight
    /// levels (link / 800), at least 8 bit/s.
    pub(crate) fn leaf_rate_bps(&self) -> u64 {
        (self.link_bps / 800).max(8)
    }

    /// The guaranteed `rate` of the control class: 1 % of the link, so ARP and neighbour
    /// discovery get through a saturated port at once.
    pub(crate) fn control_rate_bps(&self) -> u64 {
        (self.link_bps / 100).max(8)
    }

    /// The `tc -batch` lines that build the tree on `dev` (run with `tc -n NS -batch -`).
    pub(crate) fn tc_batch(&self, dev: &str) -> Vec<String> {
        let link = self.link_bps;
        let buffer = self.buffer_bytes;
        let mut lines = vec![
            format!("qdisc add dev {dev} root handle 1: htb default 20"),
            format!(
                "class add dev {dev} parent 1: classid {LINK_CLASS} htb rate {link}bit \
                 ceil {link}bit quantum {QUANTUM_BYTES}"
            ),
            format!(
                "class add dev {dev} parent {LINK_CLASS} classid {CONTROL_CLASS} htb rate {}bit \
                 ceil {link}bit prio 0 quantum {QUANTUM_BYTES}",
                self.control_rate_bps()
            ),
            format!("qdisc add dev {dev} parent {CONTROL_CLASS} handle 20: bfifo limit {buffer}"),
            format!("filter add dev {dev} parent 1: protocol arp prio 1 u32 match u32 0 0 flowid {CONTROL_CLASS}"),
        ];
        for icmp_type in NEIGHBOUR_DISCOVERY_TYPES {
            lines.push(format!(
                "filter add dev {dev} parent 1: protocol ipv6 prio 2 u32 \
                 match ip6 protocol 58 0xff match ip6 icmp_type {icmp_type} 0xff flowid {CONTROL_CLASS}"
            ));
        }
        for level in 0..LEVELS {
            let class = level_class(level);
            lines.push(format!(
                "class add dev {dev} parent {LINK_CLASS} classid {class} htb rate {}bit \
                 ceil {link}bit prio {} quantum {QUANTUM_BYTES}",
                self.leaf_rate_bps(),
                htb_prio(level)
            ));
            lines.push(format!(
                "qdisc add dev {dev} parent {class} handle 1{level}: bfifo limit {buffer}"
            ));
        }
        for level in 0..LEVELS {
            lines.push(format!(
                "filter add dev {dev} parent 1: protocol ip prio 3 u32 \
                 match ip tos {:#04x} 0xe0 flowid {}",
                tos(level),
                level_class(level)
            ));
        }
        for level in 0..LEVELS {
            lines.push(format!(
                "filter add dev {dev} parent 1: protocol ipv6 prio 4 u32 \
                 match ip6 priority {:#04x} 0xe0 flowid {}",
                tos(level),
                level_class(level)
            ));
        }
        lines
    }
}

/// The counters `tc -s` prints for a qdisc or a class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Bytes sent (dequeued towards the device).
    pub(crate) sent_bytes: u64,
    /// Packets sent.
    pub(crate) sent_packets: u64,
    /// Packets dropped (tail drops of a full `bfifo`, counted by the class or qdisc).
    pub(crate) dropped: u64,
    /// Times a packet had to wait for tokens.
    pub(crate) overlimits: u64,
    /// Bytes queued now. `tc` prints sizes near a multiple of 1024 as `NKb` / `NMb`, so
    /// this may be rounded (to within 16 bytes below 1 MiB, 1 KiB above).
    pub(crate) backlog_bytes: u64,
    /// Packets queued now.
    pub(crate) backlog_packets: u64,
}

impl Counters {
    /// The change from `earlier` to `self` of the cumulative counters (sent, dropped,
    /// overlimits); the backlog is `self`'s.
    pub(crate) fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            sent_bytes: self.sent_bytes.saturating_sub(earlier.sent_bytes),
            sent_packets: self.sent_packets.saturating_sub(earlier.sent_packets),
            dropped: self.dropped.saturating_sub(earlier.dropped),
            overlimits: self.overlimits.saturating_sub(earlier.overlimits),
            backlog_bytes: self.backlog_bytes,
            backlog_packets: self.backlog_packets,
        }
    }
}

/// One qdisc of `tc -s qdisc show dev X`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QdiscStats {
    /// `htb`, `bfifo`, `noqueue`, …
    pub(crate) kind: String,
    /// Its handle, e.g. `1:` or `10:`.
    pub(crate) handle: String,
    /// The device it is on (`dev X`), as printed.
    pub(crate) dev: Option<String>,
    /// The parent class (`None` for the root qdisc).
    pub(crate) parent: Option<String>,
    /// Its counters.
    pub(crate) counters: Counters,
}

/// One class of `tc -s class show dev X`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClassStats {
    /// Its class id, e.g. `1:17`.
    pub(crate) classid: String,
    /// The parent class (`None` for a class directly under the root qdisc).
    pub(crate) parent: Option<String>,
    /// The htb `prio`, where printed (leaf classes).
    pub(crate) prio: Option<u8>,
    /// Its counters.
    pub(crate) counters: Counters,
}

/// Parses the output of `tc -s qdisc show dev X`.
pub(crate) fn parse_qdisc_stats(text: &str) -> Result<Vec<QdiscStats>, TestbedError> {
    let mut out: Vec<QdiscStats> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("qdisc ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (kind, handle) = match words.as_slice() {
                [kind, handle, ..] => (*kind, *handle),
                _ => return Err(parse_error(line, "`qdisc KIND HANDLE`")),
            };
            out.push(QdiscStats {
                kind: kind.to_string(),
                handle: handle.to_string(),
                dev: word_after(&words, "dev"),
                parent: word_after(&words, "parent"),
                counters: Counters::default(),
            });
        } else if let Some(current) = out.last_mut() {
            parse_counter_line(line, &mut current.counters)?;
        } else if !line.trim().is_empty() {
            return Err(parse_error(line, "a `qdisc` line first"));
        }
    }
    Ok(out)
}

/// Parses the output of `tc -s class show dev X`.
pub(crate) fn parse_class_stats(text: &str) -> Result<Vec<ClassStats>, TestbedError> {
    let mut out: Vec<ClassStats> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("class ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let classid = match words.as_slice() {
                [_kind, classid, ..] => *classid,
                _ => return Err(parse_error(line, "`class KIND CLASSID`")),
            };
            let prio = match word_after(&words, "prio") {
                Some(p) => Some(
                    p.parse::<u8>()
                        .map_err(|_| parse_error(line, "a number after `prio`"))?,
                ),
                None => None,
            };
            out.push(ClassStats {
                classid: classid.to_string(),
                parent: word_after(&words, "parent"),
                prio,
                counters: Counters::default(),
            });
        } else if let Some(current) = out.last_mut() {
            parse_counter_line(line, &mut current.counters)?;
        } else if !line.trim().is_empty() {
            return Err(parse_error(line, "a `class` line first"));
        }
    }
    Ok(out)
}

fn parse_error(line: &str, expected: &'static str) -> TestbedError {
    TestbedError::TcParse {
        line: line.to_string(),
        expected,
    }
}

fn word_after(words: &[&str], key: &str) -> Option<String> {
    words
        .iter()
        .position(|w| *w == key)
        .and_then(|i| words.get(i + 1))
        .map(|w| w.to_string())
}

/// Reads the ` Sent …` and ` backlog …` lines into `c`; other body lines (`lended:`,
/// `tokens:`, rate estimates) are ignored.
fn parse_counter_line(line: &str, c: &mut Counters) -> Result<(), TestbedError> {
    let trimmed = line.trim();
    if let Some(rest) = trimmed.strip_prefix("Sent ") {
        // Sent 928562 bytes 619 pkt (dropped 12950, overlimits 0 requeues 0)
        let cleaned = rest.replace(['(', ')', ','], " ");
        let words: Vec<&str> = cleaned.split_whitespace().collect();
        let number = |key: &str, expected: &'static str| -> Result<u64, TestbedError> {
            let value = match words.iter().position(|w| *w == key) {
                // `N bytes` and `N pkt` have the number before the key.
                Some(i) if key == "bytes" || key == "pkt" => i.checked_sub(1).map(|j| words[j]),
                Some(i) => words.get(i + 1).copied(),
                None => None,
            };
            value
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| parse_error(line, expected))
        };
        c.sent_bytes = number("bytes", "`Sent N bytes`")?;
        c.sent_packets = number("pkt", "`M pkt`")?;
        c.dropped = number("dropped", "`dropped N`")?;
        c.overlimits = number("overlimits", "`overlimits N`")?;
    } else if let Some(rest) = trimmed.strip_prefix("backlog ") {
        // backlog 242240b 160p requeues 0
        let mut words = rest.split_whitespace();
        let bytes = words
            .next()
            .and_then(parse_size)
            .ok_or_else(|| parse_error(line, "`backlog SIZE`"))?;
        let packets = words
            .next()
            .and_then(|p| p.strip_suffix('p'))
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(|| parse_error(line, "`backlog SIZE Np`"))?;
        c.backlog_bytes = bytes;
        c.backlog_packets = packets;
    }
    Ok(())
}

/// A size as `tc` prints it: `242240b`, `256Kb`, `3Mb`, `1Gb` (binary multiples).
fn parse_size(s: &str) -> Option<u64> {
    let (number, multiplier) = if let Some(n) = s.strip_suffix("Gb") {
        (n, 1u64 << 30)
    } else if let Some(n) = s.strip_suffix("Mb") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("Kb") {
        (n, 1 << 10)
    } else {
        (s.strip_suffix('b')?, 1)
    };
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(multiplier);
    }
    let n: f64 = number.parse().ok()?;
    (n.is_finite() && n >= 0.0).then(|| (n * multiplier as f64).round() as u64)
}

/// Every qdisc and class of one shaped device, as `tc -s` reported them at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortStats {
    /// The namespace the device is in.
    pub(crate) netns: String,
    /// The device.
    pub(crate) dev: String,
    /// Its qdiscs, the root first.
    pub(crate) qdiscs: Vec<QdiscStats>,
    /// Its classes, keyed by class id.
    pub(crate) classes: BTreeMap<String, ClassStats>,
}

impl PortStats {
    /// The root qdisc's counters: everything through the port (drops of every class).
    pub(crate) fn total(&self) -> Counters {
        self.qdiscs
            .iter()
            .find(|q| q.parent.is_none())
            .map(|q| q.counters)
            .unwrap_or_default()
    }

    /// The counters of level `level`'s leaf class.
    pub(crate) fn level(&self, level: u8) -> Counters {
        self.class(&level_class(level))
    }

    /// The counters of class `classid` (zero if it does not exist).
    pub(crate) fn class(&self, classid: &str) -> Counters {
        self.classes
            .get(classid)
            .map(|c| c.counters)
            .unwrap_or_default()
    }
}

/// Every qdisc of every device in namespace `netns` (`tc -n NETNS -s qdisc show`): one
/// command for a whole switch, cheap enough to sample queues several times a second.
pub(crate) fn read_qdiscs(netns: &str) -> Result<Vec<QdiscStats>, TestbedError> {
    let mut command = Command::new("tc");
    command.args(["-n", netns, "-s", "qdisc", "show"]);
    parse_qdisc_stats(&run_checked(&mut command)?)
}

/// The priority level whose leaf class is `classid` (`1:1p`), if it is one.
pub(crate) fn level_of_class(classid: &str) -> Option<u8> {
    (0..LEVELS).find(|&l| level_class(l) == classid)
}

/// Runs `tc -s qdisc show dev DEV` and `tc -s class show dev DEV` in namespace `netns`
/// and parses both.
pub(crate) fn read_port_stats(netns: &str, dev: &str) -> Result<PortStats, TestbedError> {
    let show = |what: &str| -> Result<String, TestbedError> {
        let mut command = Command::new("tc");
        command.args(["-n", netns, "-s", what, "show", "dev", dev]);
        run_checked(&mut command)
    };
    let qdiscs = parse_qdisc_stats(&show("qdisc")?)?;
    let classes = parse_class_stats(&show("class")?)?
        .into_iter()
        .map(|c| (c.classid.clone(), c))
        .collect();
    Ok(PortStats {
        netns: netns.to_string(),
        dev: dev.to_string(),
        qdiscs,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tc -s qdisc show dev p1` in the switch namespace of a testbed on this machine
    /// (100 Mbit/s, 256 KiB per class) during a TOS 0 flood (trimmed to five qdiscs).
    const QDISC_SAMPLE: &str = "\
qdisc htb 1: root refcnt 3 r2q 10 default 0x20 direct_packets_stat 1 direct_qlen 1000
 Sent 928690 bytes 621 pkt (dropped 12950, overlimits 1224 requeues 0) 
 backlog 242240b 160p requeues 0
qdisc bfifo 15: parent 1:15 limit 256Kb
 Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 0b 0p requeues 0
qdisc bfifo 17: parent 1:17 limit 256Kb
 Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 0b 0p requeues 0
qdisc bfifo 10: parent 1:10 limit 256Kb
 Sent 928562 bytes 619 pkt (dropped 12950, overlimits 0 requeues 0) 
 backlog 242240b 160p requeues 0
qdisc bfifo 20: parent 1:20 limit 256Kb
 Sent 128 bytes 2 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 0b 0p requeues 0
";

    /// `tc -s class show dev p1` at the same moment (trimmed to four classes).
    const CLASS_SAMPLE: &str = "\
class htb 1:11 parent 1:1 leaf 11: prio 6 rate 125Kbit ceil 100Mbit burst 1600b cburst 1600b 
 Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 0b 0p requeues 0
 lended: 0 borrowed: 0 giants: 0
 tokens: 1600000 ctokens: 2000

class htb 1:10 parent 1:1 leaf 10: prio 7 rate 125Kbit ceil 100Mbit burst 1600b cburst 1600b 
 Sent 1061794 bytes 707 pkt (dropped 14115, overlimits 700 requeues 0) 
 backlog 257380b 170p requeues 0
 lended: 8 borrowed: 699 giants: 0
 tokens: -105051 ctokens: -1694

class htb 1:1 root rate 100Mbit ceil 100Mbit burst 1600b cburst 1600b 
 Sent 1061836 bytes 708 pkt (dropped 0, overlimits 700 requeues 0) 
 backlog 0b 0p requeues 0
 lended: 699 borrowed: 0 giants: 0
 tokens: -1694 ctokens: -1694

class htb 1:20 parent 1:1 leaf 20: prio 0 rate 1Mbit ceil 100Mbit burst 1600b cburst 1600b 
 Sent 42 bytes 1 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 3Kb 2p requeues 0
 lended: 1 borrowed: 0 giants: 0
 tokens: 194750 ctokens: 1947

";

    #[test]
    fn tos_prio_and_class_of_each_level() {
        assert_eq!(tos(7), 0xE0);
        assert_eq!(tos(6), 0xC0);
        assert_eq!(tos(0), 0x00);
        assert_eq!(htb_prio(7), 0);
        assert_eq!(htb_prio(0), 7);
        assert_eq!(level_class(3), "1:13");
        assert_eq!(level_class(7), "1:17");
        assert_eq!(level_of_class("1:13"), Some(3));
        assert_eq!(level_of_class("1:20"), None);
        assert_eq!(level_of_class("1:1"), None);
    }

    #[test]
    fn tc_batch_builds_the_priority_tree() {
        let shaping = PortShaping {
            link_bps: 100_000_000,
            buffer_bytes: 262_144,
        };
        assert_eq!(shaping.leaf_rate_bps(), 125_000);
        assert_eq!(shaping.control_rate_bps(), 1_000_000);
        let lines = shaping.tc_batch("p1");
        assert_eq!(lines[0], "qdisc add dev p1 root handle 1: htb default 20");
        assert_eq!(
            lines[1],
            "class add dev p1 parent 1: classid 1:1 htb rate 100000000bit ceil 100000000bit quantum 1514"
        );
        let has = |l: &str| lines.iter().any(|x| x == l);
        assert!(has(
            "class add dev p1 parent 1:1 classid 1:17 htb rate 125000bit ceil 100000000bit prio 0 quantum 1514"
        ));
        assert!(has(
            "class add dev p1 parent 1:1 classid 1:10 htb rate 125000bit ceil 100000000bit prio 7 quantum 1514"
        ));
        assert!(has(
            "qdisc add dev p1 parent 1:17 handle 17: bfifo limit 262144"
        ));
        assert!(has(
            "qdisc add dev p1 parent 1:20 handle 20: bfifo limit 262144"
        ));
        assert!(has(
            "filter add dev p1 parent 1: protocol ip prio 3 u32 match ip tos 0xe0 0xe0 flowid 1:17"
        ));
        assert!(has(
            "filter add dev p1 parent 1: protocol ip prio 3 u32 match ip tos 0x00 0xe0 flowid 1:10"
        ));
        assert!(has(
            "filter add dev p1 parent 1: protocol ipv6 prio 4 u32 match ip6 priority 0xa0 0xe0 flowid 1:15"
        ));
        assert!(has(
            "filter add dev p1 parent 1: protocol arp prio 1 u32 match u32 0 0 flowid 1:20"
        ));
        assert!(has(
            "filter add dev p1 parent 1: protocol ipv6 prio 2 u32 match ip6 protocol 58 0xff match ip6 icmp_type 135 0xff flowid 1:20"
        ));
        // Eight leaves with distinct prios 0..=7, eight bfifos plus the control one.
        let class_lines: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains(" prio ") && l.starts_with("class"))
            .collect();
        assert_eq!(class_lines.len(), 9);
        assert_eq!(lines.iter().filter(|l| l.contains("bfifo")).count(), 9);
        assert_eq!(
            lines.iter().filter(|l| l.contains("match ip tos")).count(),
            8
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("match ip6 priority"))
                .count(),
            8
        );
        // Every line names the device.
        assert!(lines.iter().all(|l| l.contains(" dev p1 ")));
        // The control and neighbour-discovery filters are tried before the data ones.
        let first_data = lines
            .iter()
            .position(|l| l.contains("match ip tos"))
            .unwrap();
        let last_control = lines
            .iter()
            .rposition(|l| l.contains("flowid 1:20"))
            .unwrap();
        assert!(last_control < first_data);
    }

    #[test]
    fn leaf_rates_scale_with_the_link_and_never_reach_zero() {
        let slow = PortShaping {
            link_bps: 10_000_000,
            buffer_bytes: 3028,
        };
        assert_eq!(slow.leaf_rate_bps(), 12_500);
        assert!(slow
            .tc_batch("eth0")
            .iter()
            .any(|l| l.contains("rate 12500bit")));
        let tiny = PortShaping {
            link_bps: 1000,
            buffer_bytes: 3028,
        };
        assert_eq!(tiny.leaf_rate_bps(), 8);
        assert_eq!(tiny.control_rate_bps(), 10);
    }

    #[test]
    fn parses_qdisc_stats_captured_here() {
        let q = parse_qdisc_stats(QDISC_SAMPLE).unwrap();
        assert_eq!(q.len(), 5);
        assert_eq!(q[0].kind, "htb");
        assert_eq!(q[0].handle, "1:");
        assert_eq!(q[0].parent, None);
        // Shown for one device, the lines do not name it.
        assert_eq!(q[0].dev, None);
        assert_eq!(
            q[0].counters,
            Counters {
                sent_bytes: 928_690,
                sent_packets: 621,
                dropped: 12_950,
                overlimits: 1224,
                backlog_bytes: 242_240,
                backlog_packets: 160,
            }
        );
        assert_eq!(q[3].kind, "bfifo");
        assert_eq!(q[3].parent.as_deref(), Some("1:10"));
        assert_eq!(q[3].counters.dropped, 12_950);
        assert_eq!(q[4].counters.sent_packets, 2);
    }

    /// `tc -s qdisc show` without `dev`, captured in a switch namespace here.
    const ALL_DEVICES_SAMPLE: &str = "\
qdisc noqueue 0: dev lo root refcnt 2 
 Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 0b 0p requeues 0
qdisc htb 1: dev p0 root refcnt 3 r2q 10 default 0x20 direct_packets_stat 0 direct_qlen 1000
 Sent 350356093 bytes 427459 pkt (dropped 0, overlimits 79864 requeues 0) 
 backlog 4542b 3p requeues 0
qdisc bfifo 15: dev p0 parent 1:15 limit 256Kb
 Sent 4190514 bytes 2781 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 0b 0p requeues 0
qdisc bfifo 10: dev p0 parent 1:10 limit 256Kb
 Sent 275652592 bytes 188134 pkt (dropped 0, overlimits 0 requeues 0) 
 backlog 4542b 3p requeues 0
";

    #[test]
    fn parses_the_qdiscs_of_every_device() {
        let q = parse_qdisc_stats(ALL_DEVICES_SAMPLE).unwrap();
        assert_eq!(q.len(), 4);
        assert_eq!(q[0].dev.as_deref(), Some("lo"));
        assert_eq!(
            (q[1].dev.as_deref(), q[1].parent.as_deref()),
            (Some("p0"), None)
        );
        assert_eq!(q[1].counters.backlog_packets, 3);
        assert_eq!(q[3].dev.as_deref(), Some("p0"));
        assert_eq!(q[3].parent.as_deref().and_then(level_of_class), Some(0));
        assert_eq!(q[3].counters.backlog_bytes, 4542);
    }

    #[test]
    fn parses_class_stats_captured_here() {
        let c = parse_class_stats(CLASS_SAMPLE).unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[1].classid, "1:10");
        assert_eq!(c[1].prio, Some(7));
        assert_eq!(c[1].parent.as_deref(), Some("1:1"));
        assert_eq!(c[1].counters.dropped, 14_115);
        assert_eq!(c[1].counters.backlog_packets, 170);
        assert_eq!(c[1].counters.backlog_bytes, 257_380);
        assert_eq!(c[2].classid, "1:1");
        assert_eq!(c[2].parent, None);
        assert_eq!(c[2].prio, None);
        // `3Kb`: tc's rounded size.
        assert_eq!(c[3].counters.backlog_bytes, 3072);
        let stats = PortStats {
            netns: "ns".into(),
            dev: "p1".into(),
            qdiscs: parse_qdisc_stats(QDISC_SAMPLE).unwrap(),
            classes: c.into_iter().map(|c| (c.classid.clone(), c)).collect(),
        };
        assert_eq!(stats.total().dropped, 12_950);
        assert_eq!(stats.level(0).sent_packets, 707);
        assert_eq!(stats.level(7), Counters::default());
        assert_eq!(stats.class(CONTROL_CLASS).sent_bytes, 42);
    }

    #[test]
    fn counters_since_subtract_the_cumulative_ones() {
        let before = Counters {
            sent_bytes: 100,
            sent_packets: 2,
            dropped: 5,
            overlimits: 1,
            backlog_bytes: 3000,
            backlog_packets: 2,
        };
        let after = Counters {
            sent_bytes: 1600,
            sent_packets: 3,
            dropped: 9,
            overlimits: 4,
            backlog_bytes: 0,
            backlog_packets: 0,
        };
        let d = after.since(&before);
        assert_eq!(
            (d.sent_bytes, d.sent_packets, d.dropped, d.overlimits),
            (1500, 1, 4, 3)
        );
        assert_eq!((d.backlog_bytes, d.backlog_packets), (0, 0));
        // A counter reset (qdisc rebuilt) does not underflow.
        assert_eq!(before.since(&after).sent_bytes, 0);
    }

    #[test]
    fn sizes_as_tc_prints_them() {
        assert_eq!(parse_size("242240b"), Some(242_240));
        assert_eq!(parse_size("256Kb"), Some(262_144));
        assert_eq!(parse_size("3Mb"), Some(3 << 20));
        assert_eq!(parse_size("1Gb"), Some(1 << 30));
        assert_eq!(parse_size("1.5Kb"), Some(1536));
        assert_eq!(parse_size("12"), None);
        assert_eq!(parse_size("xb"), None);
        assert_eq!(parse_size("-1Kb"), None);
    }

    #[test]
    fn malformed_output_is_an_error_not_a_panic() {
        for bad in [
            " Sent 1 bytes 1 pkt (dropped 0, overlimits 0 requeues 0)\n",
            "qdisc htb\n",
            "qdisc htb 1: root\n Sent x bytes 1 pkt (dropped 0, overlimits 0 requeues 0)\n",
            "qdisc htb 1: root\n Sent 1 bytes 1 pkt (overlimits 0 requeues 0)\n",
            "qdisc htb 1: root\n Sent bytes\n",
            "qdisc htb 1: root\n backlog 12 0p\n",
            "qdisc htb 1: root\n backlog 12b\n",
        ] {
            let e = parse_qdisc_stats(bad).unwrap_err();
            assert!(matches!(e, TestbedError::TcParse { .. }), "{bad:?}: {e}");
        }
        for bad in [
            "class htb\n",
            "class htb 1:10 parent 1:1 leaf 10: prio x rate 1bit\n",
            " backlog 0b 0p\n",
        ] {
            let e = parse_class_stats(bad).unwrap_err();
            assert!(matches!(e, TestbedError::TcParse { .. }), "{bad:?}: {e}");
        }
        assert_eq!(parse_qdisc_stats("").unwrap(), vec![]);
    }
}
