//! Cutting what a tightened table refuses. Established connections pass the table on their
//! conntrack state, so a change that takes something away (a network becoming managed, a proxy
//! or role gone, a role losing a rule) would leave open what was opened before it. After each
//! apply, every tracked TCP and UDP connection is judged as if it were new, by the table just
//! applied ([`enforcer_core::evaluate`]), and those it would drop are deleted from the kernel's
//! tracking table: their next packet is a new one, and the table drops it.

use enforcer_core::evaluate::Fate;
use enforcer_core::topology::Protocol;
use enforcer_nft::conntrack::Connection;

use crate::judge::Judge;

/// The comment of the rule that would drop `connection` were it new, `None` when the table
/// would let it through. It is judged as its first packet passes the hook: from its original
/// source to its reply's source (where a DNAT sent it), toward that port.
pub fn refuses<'a>(judge: &Judge<'a>, connection: &Connection) -> Option<&'a str> {
    let protocol = protocol_of(connection)?;
    let judged = judge.judge(
        connection.original.source.ip(),
        connection.reply.source,
        protocol,
    );
    match judged.decision.fate {
        Fate::Dropped => Some(judged.decision.rule.map_or("", |r| r.comment.as_str())),
        Fate::Passed => None,
    }
}

/// The transport of a connection, of those the table distinguishes.
fn protocol_of(connection: &Connection) -> Option<Protocol> {
    [Protocol::Tcp, Protocol::Udp]
        .into_iter()
        .find(|p| p.number() == connection.original.protocol)
}

/// A connection for a log line: `tcp 10.0.0.5:40000 -> 203.0.113.10:443`.
pub fn describe(connection: &Connection) -> String {
    let protocol = protocol_of(connection).map_or("?", Protocol::name);
    format!(
        "{protocol} {} -> {}",
        connection.original.source, connection.reply.source
    )
}
