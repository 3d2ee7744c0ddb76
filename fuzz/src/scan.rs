//! Reads the rendered `nft` text back as nft's scanner would, and checks that every string from
//! the input sits where enforcer validated it: inside a quoted string (comments, interface
//! names), or as the table name, a `proxy_NAME` chain name or a role's chain and set names.
//! Every other word must be one the renderer writes itself (keywords, numbers, addresses and
//! address ranges, set and chain names it builds).

use std::net::IpAddr;
use std::str::FromStr;

use enforcer_core::names::{ChainName, SetName};
use enforcer_core::topology::{is_valid_interface, is_valid_name, Topology};

/// Longest comment nft accepts (NFTNL_UDATA_COMMENT_MAXLEN): a longer one loads over netlink
/// but makes `nft list` output that nft cannot read back.
const NFT_COMMENT_MAX: usize = 128;

/// Words the renderer writes unquoted, outside the name positions.
const VOCABULARY: &[&str] = &[
    "table",
    "inet",
    "delete",
    "set",
    "map",
    "type",
    "ipv4_addr",
    "ipv6_addr",
    "ifname",
    "verdict",
    "counter",
    "elements",
    "=",
    "comment",
    "chain",
    "filter",
    "hook",
    "forward",
    "input",
    "priority",
    "policy",
    "accept",
    "drop",
    "return",
    "continue",
    "jump",
    "goto",
    "ip",
    "ip6",
    "saddr",
    "daddr",
    "vmap",
    "ct",
    "state",
    "established",
    "related",
    "invalid",
    "icmpv6",
    "tcp",
    "udp",
    "dport",
    "iifname",
    "!=",
    ":",
    ".",
    "&",
    // The bridge table's.
    "bridge",
    "prerouting",
    "ether",
    "arp",
    "htype",
    "ptype",
    "hlen",
    "plen",
    "sport",
    "8021q",
    "8021ad",
    "@th",
    // Flow sets (roles).
    "flags",
    "interval",
    "inet_proto",
    "inet_service",
    "meta",
    "l4proto",
    "th",
    "hoplimit",
    // Quarantine (dynamic sets, the arp table, the output hook).
    "output",
    "oifname",
    "size",
    "dynamic",
    "add",
    // The audit chains.
    "limit",
    "rate",
    "burst",
    "packets",
    "log",
    "prefix",
    "group",
];

/// Words nft 1.0.6 reads as keywords where a table name is expected, so that `table inet WORD`
/// is a syntax error (the table loads over netlink but can then not be listed or deleted by
/// name). Derived by loading `table inet WORD` with `nft -c` for every quoted word of nft's
/// scanner (src/scanner.l) that enforcer's table-name rule allows; 151 of 357 failed. Kept apart
/// from `enforcer_core::nft_syntax` on purpose: an oracle found another way (by asking nft), so
/// that a word missing from the product's list is caught here.
pub const NFT_TABLE_KEYWORDS: &[&str] = &[
    "accept",
    "add",
    "ah",
    "all",
    "and",
    "arp",
    "bridge",
    "cgroup",
    "chain",
    "comment",
    "comp",
    "constant",
    "continue",
    "counter",
    "cpu",
    "create",
    "ct",
    "day",
    "dccp",
    "define",
    "delete",
    "describe",
    "device",
    "devices",
    "dnat",
    "drop",
    "dst",
    "dup",
    "dynamic",
    "ecn",
    "element",
    "elements",
    "eq",
    "esp",
    "ether",
    "exists",
    "expires",
    "export",
    "exthdr",
    "fib",
    "flags",
    "flow",
    "flowtable",
    "flush",
    "frag",
    "fwd",
    "ge",
    "get",
    "goto",
    "gt",
    "handle",
    "hbh",
    "hook",
    "hour",
    "ibriport",
    "ibrname",
    "icmp",
    "icmpv6",
    "igmp",
    "iif",
    "iifgroup",
    "iifname",
    "iiftype",
    "import",
    "include",
    "index",
    "inet",
    "insert",
    "interval",
    "ip",
    "ip6",
    "ipsec",
    "jhash",
    "jump",
    "le",
    "limit",
    "list",
    "log",
    "lshift",
    "lt",
    "map",
    "mark",
    "masquerade",
    "meta",
    "meter",
    "mh",
    "missing",
    "monitor",
    "ne",
    "netdev",
    "nftrace",
    "not",
    "notrack",
    "numgen",
    "obriport",
    "obrname",
    "offload",
    "oif",
    "oifgroup",
    "oifname",
    "oiftype",
    "or",
    "osf",
    "pkttype",
    "policy",
    "position",
    "priority",
    "queue",
    "quota",
    "random",
    "redefine",
    "redirect",
    "reject",
    "rename",
    "replace",
    "reset",
    "return",
    "rshift",
    "rt",
    "rt0",
    "rt2",
    "rtclassid",
    "rule",
    "ruleset",
    "sctp",
    "secmark",
    "set",
    "size",
    "skgid",
    "skuid",
    "snat",
    "socket",
    "srh",
    "symhash",
    "synproxy",
    "table",
    "tcp",
    "th",
    "time",
    "timeout",
    "tproxy",
    "type",
    "typeof",
    "udp",
    "udplite",
    "undefine",
    "update",
    "vlan",
    "vmap",
    "xor",
    "xt",
];

/// A piece of nft text: a bare word, or the inside of a `"..."` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Quoted(&'a str),
}

/// Splits `text` as nft's scanner does for what the renderer writes: a quoted string runs to
/// the next `"` (nft has no escapes inside one), words end at white space, `,`, `;`, `{`, `}`.
fn tokens(text: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || ",;{}".contains(c));
        if rest.is_empty() {
            return Ok(out);
        }
        if let Some(body) = rest.strip_prefix('"') {
            let end = body
                .find('"')
                .ok_or_else(|| format!("unterminated quoted string `{}`", clip(rest)))?;
            out.push(Token::Quoted(&body[..end]));
            rest = &body[end + 1..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || ",;{}\"".contains(c))
                .unwrap_or(rest.len());
            out.push(Token::Word(&rest[..end]));
            rest = &rest[end..];
        }
    }
}

fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Checks the rendered `script` of table `table`, planned from `topology`.
pub fn scan(script: &str, table: &str, topology: &Topology) -> Result<(), String> {
    let tokens = tokens(script)?;
    let (mut before_previous, mut previous) = (Token::Word(""), Token::Word(""));
    for (index, token) in tokens.iter().enumerate() {
        let problem = match (before_previous, previous, *token) {
            (_, Token::Word("comment"), Token::Quoted(text)) => comment(text),
            (_, Token::Word("prefix"), Token::Quoted(text)) => log_prefix(text),
            (_, _, Token::Quoted(text)) => interface(text),
            // `arp` is also a bridge table's match keyword: a table name only after `table`.
            (_, Token::Word("inet" | "bridge"), Token::Word(word))
            | (Token::Word("table"), Token::Word("arp"), Token::Word(word)) => {
                table_name(word, table)
            }
            (_, Token::Word("chain" | "jump" | "goto"), Token::Word(word)) => {
                chain(word, topology)
            }
            (_, Token::Word("set" | "map"), Token::Word(word)) => set(word, topology),
            (_, _, Token::Word("@th")) => Ok(()),
            (_, _, Token::Word(word)) => match word.strip_prefix('@') {
                Some(name) => set(name, topology),
                None => bare(word),
            },
        };
        if let Err(problem) = problem {
            return Err(format!("token {index} of the rendered script: {problem}"));
        }
        before_previous = previous;
        previous = *token;
    }
    Ok(())
}

fn comment(text: &str) -> Result<(), String> {
    if text.contains('\n') {
        return Err(format!("comment `{}` spans lines", clip(text)));
    }
    if text.len() > NFT_COMMENT_MAX {
        return Err(format!(
            "comment of {} bytes (nft reads at most {NFT_COMMENT_MAX}; `nft list` output would \
             not load back): `{}`",
            text.len(),
            clip(text)
        ));
    }
    Ok(())
}

/// A log prefix: one the audit chains write (`enforcer:REASON`), never the input's.
fn log_prefix(text: &str) -> Result<(), String> {
    match enforcer_core::planner::logged_reason(text) {
        Some(_) => Ok(()),
        None => Err(format!("log prefix `{}` is not an audit chain's", clip(text))),
    }
}

fn interface(text: &str) -> Result<(), String> {
    let stem = text.strip_suffix('*').unwrap_or(text);
    if !is_valid_interface(stem) {
        return Err(format!(
            "quoted `{}` is not an interface name or pattern",
            clip(text)
        ));
    }
    if text.ends_with("\\*") {
        return Err(format!(
            "interface pattern `{text}`: nft reads `\\*` as a literal `*`, the encoder as a \
             prefix match on `{stem}`"
        ));
    }
    Ok(())
}

fn table_name(word: &str, table: &str) -> Result<(), String> {
    if word != table {
        return Err(format!(
            "`inet {}` names no table of this ruleset",
            clip(word)
        ));
    }
    let mut chars = word.chars();
    let shaped = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !shaped {
        return Err(format!(
            "table name `{}` is not an nft identifier",
            clip(word)
        ));
    }
    if NFT_TABLE_KEYWORDS.contains(&word) {
        return Err(format!(
            "table name `{word}` is an nft keyword: nft cannot read `table inet {word}`"
        ));
    }
    Ok(())
}

fn chain(word: &str, topology: &Topology) -> Result<(), String> {
    match ChainName::from_str(word) {
        Ok(ChainName::Proxy(name)) => {
            if !is_valid_name(&name) {
                return Err(format!("chain `{}` holds an unvalidated name", clip(word)));
            }
            if !topology.proxies().iter().any(|p| p.name == name) {
                return Err(format!(
                    "chain `{}` names no proxy of the topology",
                    clip(word)
                ));
            }
            Ok(())
        }
        Ok(ChainName::Role(_, name) | ChainName::Ingress(name)) => role(&name, word, topology),
        Ok(ChainName::Port(name)) if !enforcer_core::binding::is_bindable_name(&name) => {
            Err(format!(
                "chain `{}` holds a port name that cannot name a chain",
                clip(word)
            ))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn set(word: &str, topology: &Topology) -> Result<(), String> {
    match SetName::from_str(word).map_err(|e| e.to_string())? {
        SetName::RoleFlows(_, _, name)
        | SetName::RoleServices(_, name)
        | SetName::IngressFlows(_, _, name)
        | SetName::IngressServices(_, name) => role(&name, word, topology),
        _ => Ok(()),
    }
}

/// A chain or set `word` built from role `name`: a validated name of a role the policy defines.
fn role(name: &str, word: &str, topology: &Topology) -> Result<(), String> {
    if !is_valid_name(name) {
        return Err(format!("`{}` holds an unvalidated role name", clip(word)));
    }
    if !topology.roles().contains_key(name) {
        return Err(format!("`{}` names no role of the policy", clip(word)));
    }
    Ok(())
}

/// A word outside any name position: a keyword, number, port or type range, address or prefix.
fn bare(word: &str) -> Result<(), String> {
    let number = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
    let ok = VOCABULARY.contains(&word)
        || number(word.strip_prefix('-').unwrap_or(word))
        || word
            .split_once('-')
            .is_some_and(|(a, b)| number(a) && number(b))
        || word.parse::<IpAddr>().is_ok()
        || word
            .split_once('-')
            .is_some_and(|(a, b)| a.parse::<IpAddr>().is_ok() && b.parse::<IpAddr>().is_ok())
        || word.strip_suffix("/second").is_some_and(number)
        || word.parse::<enforcer_core::ports::MacAddr>().is_ok()
        || is_hex128(word)
        || is_prefix(word);
    match ok {
        true => Ok(()),
        false => Err(format!(
            "`{}` reaches the nft text unquoted and is not a word the renderer writes",
            clip(word)
        )),
    }
}

/// `0x` and 32 hex digits: a 128-bit raw payload value (a neighbour target).
fn is_hex128(word: &str) -> bool {
    word.strip_prefix("0x")
        .is_some_and(|digits| digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `ADDRESS/LENGTH` in canonical spelling.
fn is_prefix(word: &str) -> bool {
    let Some((address, length)) = word.split_once('/') else {
        return false;
    };
    let Ok(address) = address.parse::<IpAddr>() else {
        return false;
    };
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let canonical = length == "0" || !length.starts_with('0');
    canonical && length.parse::<u8>().is_ok_and(|l| l <= bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_end_at_the_next_quote() {
        assert_eq!(
            tokens("iifname \"br-*\" comment \"a b\";").unwrap(),
            [
                Token::Word("iifname"),
                Token::Quoted("br-*"),
                Token::Word("comment"),
                Token::Quoted("a b")
            ]
        );
        assert!(tokens("comment \"open").is_err());
    }

    #[test]
    fn words_outside_names_must_be_the_renderers() {
        assert!(bare("255.255.255.0").is_ok());
        assert!(bare("ff02::/16").is_ok());
        assert!(bare("133-137").is_ok());
        assert!(bare("-10").is_ok());
        assert!(bare("llmnet").is_err());
        assert!(table_name("counter", "counter").is_err());
        assert!(table_name("enforcer", "enforcer").is_ok());
        assert!(comment(&"x".repeat(129)).is_err());
        assert!(interface("br\\*").is_err());
    }
}
