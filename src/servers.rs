//! Which control server to talk to next (docs/protocol.md section 5).
//!
//! Order of tries: the server-given list, then the `-S` list, then the compiled-in
//! list, exact duplicates once. After a success the agent sticks to that server
//! until it fails; a failure moves to the next entry, and a failure of every entry
//! in a row completes a *round*, after which the caller backs off. A new
//! server-given list starts again from the top at the next exchange.

use crate::addr::ServerAddr;
use std::fmt;

/// Where an address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Server,
    CommandLine,
    CompiledIn,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Server => "server-given (config job)",
            Source::CommandLine => "command line (-S, first start)",
            Source::CompiledIn => "compiled in (BOOT_SERVER_ADDR)",
        })
    }
}

#[derive(Clone, Debug)]
pub struct Servers {
    compiled_in: Vec<ServerAddr>,
    command_line: Vec<ServerAddr>,
    server_given: Vec<ServerAddr>,
    ordered: Vec<(ServerAddr, Source)>,
    current: usize,
    failed_in_round: usize,
}

impl Servers {
    pub fn new(
        compiled_in: Vec<ServerAddr>,
        command_line: Vec<ServerAddr>,
        server_given: Vec<ServerAddr>,
    ) -> Self {
        let mut servers = Servers {
            compiled_in,
            command_line,
            server_given,
            ordered: Vec::new(),
            current: 0,
            failed_in_round: 0,
        };
        servers.rebuild();
        servers
    }

    fn rebuild(&mut self) {
        let sources = [
            (&self.server_given, Source::Server),
            (&self.command_line, Source::CommandLine),
            (&self.compiled_in, Source::CompiledIn),
        ];
        let mut ordered: Vec<(ServerAddr, Source)> = Vec::new();
        for (list, source) in sources {
            for addr in list.iter() {
                if !ordered.iter().any(|(seen, _)| seen == addr) {
                    ordered.push((addr.clone(), source));
                }
            }
        }
        self.ordered = ordered;
        self.current = 0;
        self.failed_in_round = 0;
    }

    /// Replaces the server-given list; the next exchange starts from the top.
    pub fn set_server_given(&mut self, list: Vec<ServerAddr>) {
        self.server_given = list;
        self.rebuild();
    }

    /// Every address in the order of tries, with its source.
    pub fn ordered(&self) -> &[(ServerAddr, Source)] {
        &self.ordered
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    /// The server for the next exchange.
    pub fn current(&self) -> Option<&ServerAddr> {
        self.ordered.get(self.current).map(|(addr, _)| addr)
    }

    /// The current server answered: stick to it.
    pub fn succeeded(&mut self) {
        self.failed_in_round = 0;
    }

    /// The current server failed: move on. True when every server has now failed
    /// in a row, which ends a round.
    pub fn failed(&mut self) -> bool {
        if self.ordered.is_empty() {
            return true;
        }
        self.current = (self.current + 1) % self.ordered.len();
        self.failed_in_round += 1;
        if self.failed_in_round >= self.ordered.len() {
            self.failed_in_round = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::parse_list;

    fn list(s: &str) -> Vec<ServerAddr> {
        parse_list(s).expect("valid list")
    }

    fn names(servers: &Servers) -> Vec<String> {
        servers
            .ordered()
            .iter()
            .map(|(a, _)| a.host.clone())
            .collect()
    }

    #[test]
    fn order_is_server_then_cli_then_compiled_without_duplicates() {
        let s = Servers::new(list("c1,dup"), list("l1,dup,l1"), list("s1"));
        assert_eq!(names(&s), ["s1", "l1", "dup", "c1"]);
        assert_eq!(s.ordered()[2].1, Source::CommandLine);
    }

    #[test]
    fn sticks_after_success_fails_over_and_counts_rounds() {
        let mut s = Servers::new(list("a,b,c"), vec![], vec![]);
        assert_eq!(s.current().map(|a| a.host.as_str()), Some("a"));
        assert!(!s.failed());
        s.succeeded();
        assert_eq!(
            s.current().map(|a| a.host.as_str()),
            Some("b"),
            "sticks to b"
        );
        assert!(!s.failed());
        assert!(!s.failed());
        assert!(s.failed(), "third failure in a row ends the round");
        assert_eq!(
            s.current().map(|a| a.host.as_str()),
            Some("b"),
            "back where it failed first"
        );
    }

    #[test]
    fn new_server_list_restarts_from_the_top() {
        let mut s = Servers::new(list("a,b"), vec![], vec![]);
        s.failed();
        s.set_server_given(list("n"));
        assert_eq!(names(&s), ["n", "a", "b"]);
        assert_eq!(s.current().map(|a| a.host.as_str()), Some("n"));
    }
}
