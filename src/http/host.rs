//! Rules about hosts that do not depend on the app.

/// Loopback hosts (`localhost`, `*.localhost`, 127.0.0.0/8, `::1`): traffic
/// to them never leaves the machine, so plain http is allowed there.
pub fn is_loopback_host(host: url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}
