//! The reconcile plan: what to do to make the running tunnels match the requests. A pure
//! function of (requested pairs × recorded tunnels), so that every case is unit-tested
//! without a process in sight.

use phonehome_protocol::PortPair;

/// A recorded tunnel as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub pair: PortPair,
    pub alive: bool,
    /// Its argv is what the settings would build now (false after a config change).
    pub up_to_date: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Requested, no record: start it.
    Start(PortPair),
    /// Requested but dead or outdated: (stop and) start it again.
    Restart(PortPair),
    /// Running, no longer requested: stop it and drop its record.
    Stop(PortPair),
    /// Dead and no longer requested: drop its record.
    Forget(PortPair),
}

/// Stops and forgets come first, so that a remote port is free before a tunnel that
/// wants it starts; within each group, the order of the input.
pub fn plan(desired: &[PortPair], current: &[Current]) -> Vec<Action> {
    let mut first = Vec::new();
    let mut then = Vec::new();
    for c in current {
        if !desired.contains(&c.pair) {
            first.push(if c.alive {
                Action::Stop(c.pair)
            } else {
                Action::Forget(c.pair)
            });
        } else if !c.alive || !c.up_to_date {
            then.push(Action::Restart(c.pair));
        }
    }
    for d in desired {
        if !current.iter().any(|c| c.pair == *d) {
            then.push(Action::Start(*d));
        }
    }
    first.extend(then);
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn p(local: u16, remote: u16) -> PortPair {
        PortPair { local, remote }
    }
    fn cur(pair: PortPair, alive: bool, up_to_date: bool) -> Current {
        Current {
            pair,
            alive,
            up_to_date,
        }
    }

    #[test]
    fn nothing_to_do() {
        assert_eq!(plan(&[], &[]), vec![]);
        assert_eq!(
            plan(&[p(22, 9876)], &[cur(p(22, 9876), true, true)]),
            vec![]
        );
    }

    #[test]
    fn start_stop_restart_forget() {
        assert_eq!(plan(&[p(22, 9876)], &[]), vec![Start(p(22, 9876))]);
        assert_eq!(
            plan(&[], &[cur(p(22, 9876), true, true)]),
            vec![Stop(p(22, 9876))]
        );
        assert_eq!(
            plan(&[], &[cur(p(22, 9876), false, true)]),
            vec![Forget(p(22, 9876))]
        );
        assert_eq!(
            plan(&[p(22, 9876)], &[cur(p(22, 9876), false, true)]),
            vec![Restart(p(22, 9876))]
        );
        assert_eq!(
            plan(&[p(22, 9876)], &[cur(p(22, 9876), true, false)]),
            vec![Restart(p(22, 9876))]
        );
    }

    #[test]
    fn a_remote_port_moving_to_another_local_port_is_freed_first() {
        assert_eq!(
            plan(&[p(80, 9876)], &[cur(p(22, 9876), true, true)]),
            vec![Stop(p(22, 9876)), Start(p(80, 9876))]
        );
    }

    #[test]
    fn mixed() {
        let desired = [p(22, 9876), p(80, 8080), p(443, 8443)];
        let current = [
            cur(p(22, 9876), true, true),
            cur(p(80, 8080), false, true),
            cur(p(8, 1), true, true),
            cur(p(9, 2), false, false),
        ];
        assert_eq!(
            plan(&desired, &current),
            vec![
                Stop(p(8, 1)),
                Forget(p(9, 2)),
                Restart(p(80, 8080)),
                Start(p(443, 8443))
            ]
        );
    }
}
