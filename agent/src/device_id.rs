//! Which device this is: the MAC of the configured interface, else of the first of
//! br-lan, eth0, wlan0 that exists, else of the first other interface with a usable
//! MAC; `--device-id` overrides it all. The choice is a pure function of an interface
//! list so that the fallback order can be tested with a fake list.

use crate::config::Settings;
use crate::failure::Failure;
use phonehome_protocol::DeviceId;

/// This device's id under `settings`. The interfaces are only looked at when no id
/// is configured.
pub fn of(settings: &Settings) -> Result<DeviceId, Failure> {
    if let Some(id) = &settings.device_id {
        return Ok(id.clone());
    }
    choose(None, settings.interface.as_deref(), &system_interfaces()).map_err(Failure::Config)
}

/// Interfaces tried first, in order: OpenWrt's LAN bridge, then the usual names.
pub const PREFERRED_INTERFACES: &[&str] = &["br-lan", "eth0", "wlan0"];

/// An interface as seen on the system: its name and MAC (if it has a link address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

pub fn choose(
    override_id: Option<&DeviceId>,
    configured: Option<&str>,
    interfaces: &[Interface],
) -> Result<DeviceId, String> {
    if let Some(id) = override_id {
        return Ok(id.clone());
    }
    let usable = |i: &Interface| i.mac.filter(|m| DeviceId::is_usable_mac(*m));
    if let Some(name) = configured {
        let iface = interfaces.iter().find(|i| i.name == name).ok_or_else(|| {
            format!(
                "interface {} does not exist: set --interface to one that does, or --device-id",
                name
            )
        })?;
        return usable(iface).map(DeviceId::from_mac).ok_or_else(|| {
            format!("interface {} has no usable MAC address: choose another --interface or set --device-id", name)
        });
    }
    for name in PREFERRED_INTERFACES {
        if let Some(mac) = interfaces.iter().find(|i| i.name == *name).and_then(usable) {
            return Ok(DeviceId::from_mac(mac));
        }
    }
    interfaces
        .iter()
        .filter(|i| i.name != "lo")
        .find_map(usable)
        .map(DeviceId::from_mac)
        .ok_or_else(|| {
            "no network interface with a usable MAC address: set --interface or --device-id"
                .to_string()
        })
}

/// The system's interfaces in kernel (ifindex) order, each MAC read from sysfs
/// (`/sys/class/net/<name>/address`): one small file per interface, where asking
/// netlink meant a dump of every interface per interface (and hung under qemu-user for
/// big-endian MIPS, whose netlink translation is broken).
pub fn system_interfaces() -> Vec<Interface> {
    // In ifindex order (then name), each put in its place as it is read: a handful of
    // them, and no sort algorithm in the router build (`slice::sort` was 4 KB of code
    // per type).
    let mut names: Vec<(u64, String)> = Vec::new();
    for e in std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let index = std::fs::read_to_string(e.path().join("ifindex"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u64::MAX);
        let entry = (index, name);
        let at = names.partition_point(|n| *n <= entry);
        names.insert(at, entry);
    }
    names
        .into_iter()
        .map(|(_, name)| Interface {
            mac: std::fs::read_to_string(format!("/sys/class/net/{}/address", name))
                .ok()
                .and_then(|text| parse_mac(&text)),
            name,
        })
        .collect()
}

/// `64:66:b3:4b:de:54` (sysfs' format, newline included) as bytes; `None` for anything
/// else (no link address, or one that is not 6 bytes: tun, InfiniBand).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim_end().split(':');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, last: u8) -> Interface {
        Interface {
            name: name.into(),
            mac: Some([0x64, 0x66, 0xb3, 0x4b, 0xde, last]),
        }
    }

    fn id(last: u8) -> DeviceId {
        DeviceId::from_mac([0x64, 0x66, 0xb3, 0x4b, 0xde, last])
    }

    #[test]
    fn macs_as_sysfs_writes_them() {
        assert_eq!(
            parse_mac("64:66:b3:4b:de:54\n"),
            Some([0x64, 0x66, 0xb3, 0x4b, 0xde, 0x54])
        );
        assert_eq!(parse_mac("02:00:00:00:0a:02"), Some([2, 0, 0, 0, 10, 2]));
        for bad in [
            "",
            "\n",
            "64:66:b3:4b:de",
            "64:66:b3:4b:de:54:00",
            "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0f:1c:4d",
            "6:66:b3:4b:de:54",
            "64:66:b3:4b:de:5g",
            "+4:66:b3:4b:de:54",
        ] {
            assert_eq!(parse_mac(bad), None, "{:?}", bad);
        }
    }

    #[test]
    fn the_system_lists_loopback_with_its_zero_mac() {
        let lo = system_interfaces()
            .into_iter()
            .find(|i| i.name == "lo")
            .expect("lo in /sys/class/net");
        assert_eq!(lo.mac, Some([0; 6]));
        let index = |name: &str| {
            let path = format!("/sys/class/net/{}/ifindex", name);
            std::fs::read_to_string(path)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        let indexes: Vec<u64> = system_interfaces().iter().map(|i| index(&i.name)).collect();
        assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{:?}", indexes);
    }

    #[test]
    fn override_wins() {
        let o = DeviceId::parse("0123456789ab").unwrap();
        assert_eq!(choose(Some(&o), Some("nope"), &[]).unwrap(), o);
    }

    #[test]
    fn configured_interface_or_a_clear_error() {
        let list = [iface("eth0", 1), iface("eth1", 2)];
        assert_eq!(choose(None, Some("eth1"), &list).unwrap(), id(2));
        let e = choose(None, Some("eth9"), &list).unwrap_err();
        assert!(e.contains("eth9") && e.contains("does not exist"), "{}", e);
        let zero = [Interface {
            name: "eth1".into(),
            mac: Some([0; 6]),
        }];
        assert!(choose(None, Some("eth1"), &zero)
            .unwrap_err()
            .contains("no usable MAC"));
    }

    #[test]
    fn fallback_order() {
        let lo = Interface {
            name: "lo".into(),
            mac: Some([0; 6]),
        };
        let list = vec![
            lo.clone(),
            iface("wan", 9),
            iface("wlan0", 3),
            iface("eth0", 2),
            iface("br-lan", 1),
        ];
        assert_eq!(choose(None, None, &list).unwrap(), id(1));
        assert_eq!(choose(None, None, &list[..4]).unwrap(), id(2));
        assert_eq!(choose(None, None, &list[..3]).unwrap(), id(3));
        assert_eq!(choose(None, None, &list[..2]).unwrap(), id(9));
        // A preferred interface without a usable MAC is skipped.
        let list = vec![
            Interface {
                name: "br-lan".into(),
                mac: Some([0xff; 6]),
            },
            iface("eth7", 7),
        ];
        assert_eq!(choose(None, None, &list).unwrap(), id(7));
        // Multicast MACs and interfaces without a link address are not ids.
        let list = vec![
            lo,
            Interface {
                name: "tun0".into(),
                mac: None,
            },
            Interface {
                name: "x".into(),
                mac: Some([1, 0, 0x5e, 0, 0, 1]),
            },
        ];
        assert!(choose(None, None, &list)
            .unwrap_err()
            .contains("--device-id"));
    }
}
