//! `server.egress_proxy` and `server.no_proxy`.

use super::Checker;
use crate::config::egress::{EgressConfig, NoProxy, ProxyEndpoint};

const KEY: &str = "server.egress_proxy";

impl Checker<'_> {
    pub(super) fn egress(
        &mut self,
        proxy: Option<String>,
        no_proxy: Option<Vec<String>>,
    ) -> EgressConfig {
        let mut egress = EgressConfig::default();
        for (i, entry) in no_proxy.iter().flatten().enumerate() {
            match NoProxy::parse(entry) {
                Ok(n) => egress.no_proxy.push(n),
                Err(problem) => self.err(
                    format!("server.no_proxy[{i}]"),
                    format!("`{entry}` {problem}"),
                ),
            }
        }
        let Some(proxy) = proxy else {
            if no_proxy.is_some() {
                self.err(
                    "server.no_proxy",
                    "applies only with server.egress_proxy (without it every connection goes direct); remove it or set egress_proxy",
                );
            }
            return egress;
        };
        if proxy == "env" {
            egress.from_env = true;
            egress.https = self.env_proxy(&["https_proxy", "HTTPS_PROXY"]);
            egress.http = self.env_proxy(&["http_proxy", "HTTP_PROXY"]);
            if let Some((name, list)) = self.env_var(&["no_proxy", "NO_PROXY"]) {
                let entries = list.split(',').filter(|e| !e.trim().is_empty());
                for (i, entry) in entries.enumerate() {
                    match NoProxy::parse(entry) {
                        Ok(n) => egress.no_proxy.push(n),
                        // Not repeated: errors never show a value of the
                        // environment.
                        Err(problem) => self.err(
                            KEY,
                            format!(
                                "= \"env\": entry {} of {name} {problem}; fix the variable",
                                i + 1
                            ),
                        ),
                    }
                }
            }
            return egress;
        }
        match ProxyEndpoint::parse(&proxy) {
            Ok(p) => {
                egress.https = Some(p.clone());
                egress.http = Some(p);
            }
            // The text is not repeated: it may hold the proxy's password.
            Err(problem) => self.err(
                KEY,
                format!("{problem}; write it like \"http://proxy.corp:3128\" (user:password@ allowed), or \"env\" to take HTTPS_PROXY / HTTP_PROXY / NO_PROXY"),
            ),
        }
        egress
    }

    /// The first of `names` set to a non-empty value, with its name.
    fn env_var(&self, names: &[&'static str]) -> Option<(&'static str, String)> {
        names.iter().find_map(|n| {
            self.env
                .var(n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*n, v))
        })
    }

    fn env_proxy(&mut self, names: &[&'static str]) -> Option<ProxyEndpoint> {
        let (name, value) = self.env_var(names)?;
        match ProxyEndpoint::parse(&value) {
            Ok(p) => Some(p),
            Err(problem) => {
                self.err(
                    KEY,
                    format!("= \"env\": {name} {problem}; fix the variable or name the proxy here"),
                );
                None
            }
        }
    }
}
