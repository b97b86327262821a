//! Who is on the other end: the peer address, or, when the peer is a trusted proxy, the client
//! it forwarded for (`Forwarded: for=` or `X-Forwarded-For`). The audit names this client and
//! the failed-authentication limits count per client, so one proxy in front of many people is
//! not one "source".

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

use super::setup::TrustedProxyError;

/// The client of a request as the audit records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client's address: the peer's, or the one a trusted proxy forwarded.
    pub source: Option<String>,
    /// The trusted proxy the request came through, when `source` was forwarded.
    pub via: Option<String>,
}

/// `auth.trusted_proxies`: addresses or CIDR ranges whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses the configured entries; the error names the first one that is neither an address
    /// nor a CIDR range.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, TrustedProxyError> {
        let mut nets = Vec::new();
        for entry in entries {
            nets.push(parse_net(entry).ok_or_else(|| TrustedProxyError(entry.clone()))?);
        }
        Ok(TrustedProxies(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer`. Only a trusted peer's headers are read; within
    /// them the right-most address that is not itself a trusted proxy is the client (entries to
    /// its left were written by the client and prove nothing).
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientAddress {
        let Some(peer) = peer else { return ClientAddress::default() };
        let direct = ClientAddress { source: Some(peer.to_string()), via: None };
        if !self.trusts(peer) {
            return direct;
        }
        let mut chain: Vec<IpAddr> = Vec::new();
        for value in headers.get_all("forwarded") {
            let Ok(text) = value.to_str() else { return direct };
            for element in text.split(',') {
                for pair in element.split(';') {
                    if let Some((name, value)) = pair.trim().split_once('=') {
                        if name.trim().eq_ignore_ascii_case("for") {
                            match forwarded_ip(value) {
                                Some(ip) => chain.push(ip),
                                None => return direct,
                            }
                        }
                    }
                }
            }
        }
        if chain.is_empty() {
            for value in headers.get_all("x-forwarded-for") {
                let Ok(text) = value.to_str() else { return direct };
                for item in text.split(',') {
                    match forwarded_ip(item) {
                        Some(ip) => chain.push(ip),
                        None => return direct,
                    }
                }
            }
        }
        match chain.iter().rev().find(|ip| !self.trusts(**ip)).or(chain.first()) {
            Some(client) => ClientAddress { source: Some(client.to_string()), via: Some(peer.to_string()) },
            None => direct,
        }
    }
}

/// An audit record names the client as found here.
impl crate::audit::AuditEvent {
    pub fn from_client(self, client: &ClientAddress) -> Self {
        self.from_addresses(client.source.clone(), client.via.clone())
    }
}

fn parse_net(entry: &str) -> Option<IpNet> {
    let entry = entry.trim();
    entry.parse::<IpNet>().ok().or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
}

/// An address as proxies write it: `203.0.113.9`, `"[2001:db8::1]:4711"`, `198.51.100.7:80`.
fn forwarded_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    text.rsplit_once(':').and_then(|(ip, port)| port.parse::<u16>().ok().and(ip.parse().ok()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Request headers from pairs (a name may come more than once); for the auth tests.
    pub(in crate::auth) fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_proxies_forward() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).unwrap();
        let client = |peer: &str, h: &[(&'static str, &str)]| proxies.client(Some(peer.parse().unwrap()), &headers(h));
        let direct = client("198.51.100.7", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(direct, ClientAddress { source: Some("198.51.100.7".into()), via: None }, "an untrusted peer's header is ignored");
        let proxied = client("127.0.0.1", &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")]);
        assert_eq!(proxied, ClientAddress { source: Some("203.0.113.9".into()), via: Some("127.0.0.1".into()) });
        let forwarded = client("10.0.0.5", &[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(forwarded.source.as_deref(), Some("2001:db8::1"));
        assert_eq!(client("10.0.0.5", &[("x-forwarded-for", "not-an-ip")]).source.as_deref(), Some("10.0.0.5"));
        assert_eq!(client("10.0.0.5", &[]).source.as_deref(), Some("10.0.0.5"));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
    }
}
