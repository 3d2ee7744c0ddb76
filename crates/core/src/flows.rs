//! Ranges of flows (destination addresses, transport protocols, destination ports) and their
//! union as disjoint elements: what an interval set keyed by `ip daddr . meta l4proto . th
//! dport` holds. The kernel refuses elements of such a set that overlap, and one allowance
//! often overlaps another (a role on a network that is also allowed whole, `any` beside
//! `tcp/443`), so the union is cut into boxes that do not.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// One box of flows: every destination from `addresses.0` to `addresses.1`, with a transport
/// protocol number in `protocols`, toward a destination port in `ports` (all inclusive). With
/// no `addresses`, any destination (a set keyed by `meta l4proto . th dport` alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowRange {
    /// First and last destination address, of one family.
    pub addresses: Option<(IpAddr, IpAddr)>,
    /// First and last protocol number.
    pub protocols: (u8, u8),
    /// First and last destination port.
    pub ports: (u16, u16),
}

/// One flow: toward `address` (none in a set keyed by `meta l4proto . th dport` alone), with
/// transport protocol number `protocol`, toward destination port `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowPoint {
    /// The destination address, when the set is keyed by one.
    pub address: Option<IpAddr>,
    /// The protocol number.
    pub protocol: u8,
    /// The destination port.
    pub port: u16,
}

impl FlowRange {
    /// The single flow this box holds, when it holds only one.
    pub fn point(&self) -> Option<FlowPoint> {
        let single = |(first, last): (IpAddr, IpAddr)| (first == last).then_some(first);
        let address = match self.addresses {
            Some(range) => Some(single(range)?),
            None => None,
        };
        (self.protocols.0 == self.protocols.1 && self.ports.0 == self.ports.1).then_some(
            FlowPoint {
                address,
                protocol: self.protocols.0,
                port: self.ports.0,
            },
        )
    }
}

/// An address as a number, so that ranges of both families sort and split alike.
fn number(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of family `like` with this number.
fn address(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((n as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

/// An inclusive range on one axis, as numbers.
type Span = (u128, u128);

/// The boxes of `flows` (all with addresses of one family, or all without) cut into disjoint
/// boxes with the same union, neighbours along the address axis merged where their protocols
/// and ports agree. Deterministic: sorted.
pub fn disjoint(flows: &[FlowRange]) -> BTreeSet<FlowRange> {
    let like = flows.iter().find_map(|f| f.addresses.map(|a| a.0));
    let boxes: Vec<(Span, Span, Span)> = flows
        .iter()
        .map(|f| {
            let addresses = f.addresses.map_or((0, 0), |(a, b)| (number(a), number(b)));
            let protocols = (f.protocols.0 as u128, f.protocols.1 as u128);
            let ports = (f.ports.0 as u128, f.ports.1 as u128);
            (addresses, protocols, ports)
        })
        .collect();
    let mut out = BTreeSet::new();
    for (addresses, rectangles) in merge_adjacent(sweep(&boxes, |b| b.0, |b| (b.1, b.2))) {
        for (protocols, ports) in rectangles {
            out.insert(FlowRange {
                addresses: like.map(|l| (address(l, addresses.0), address(l, addresses.1))),
                protocols: (protocols.0 as u8, protocols.1 as u8),
                ports: (ports.0 as u16, ports.1 as u16),
            });
        }
    }
    out
}

/// Cuts the axis `axis` of `items` at every boundary; for each elementary span covered by
/// some item, the union of the remaining dimensions (`rest`) of the items covering it, as
/// disjoint pieces. Spans with no cover are left out.
fn sweep<T, R: Pieces>(
    items: &[T],
    axis: impl Fn(&T) -> Span,
    rest: impl Fn(&T) -> R,
) -> Vec<(Span, Vec<R>)> {
    let mut cuts: BTreeSet<u128> = BTreeSet::new();
    for item in items {
        let (first, last) = axis(item);
        cuts.insert(first);
        if let Some(after) = last.checked_add(1) {
            cuts.insert(after);
        }
    }
    let mut by_start: Vec<&T> = items.iter().collect();
    by_start.sort_by_key(|i| axis(i).0);
    let cuts: Vec<u128> = cuts.into_iter().collect();
    let mut active: Vec<&T> = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for (index, &start) in cuts.iter().enumerate() {
        let end = cuts.get(index + 1).map_or(u128::MAX, |n| n - 1);
        while next < by_start.len() && axis(by_start[next]).0 <= start {
            active.push(by_start[next]);
            next += 1;
        }
        active.retain(|i| axis(i).1 >= start);
        if active.is_empty() {
            continue;
        }
        let covering: Vec<R> = active.iter().map(|i| rest(i)).collect();
        out.push(((start, end), R::union(&covering)));
    }
    out
}

/// Joins neighbouring spans whose pieces are the same.
fn merge_adjacent<R: PartialEq>(spans: Vec<(Span, Vec<R>)>) -> Vec<(Span, Vec<R>)> {
    let mut merged: Vec<(Span, Vec<R>)> = Vec::new();
    for (span, pieces) in spans {
        match merged.last_mut() {
            Some((last, previous))
                if last.1.checked_add(1) == Some(span.0) && *previous == pieces =>
            {
                last.1 = span.1;
            }
            _ => merged.push((span, pieces)),
        }
    }
    merged
}

/// What the rest of a box is, after one axis: its union can be cut into disjoint pieces.
trait Pieces: Sized {
    /// The union of `items` as disjoint pieces, sorted.
    fn union(items: &[Self]) -> Vec<Self>;
}

impl Pieces for Span {
    fn union(items: &[Span]) -> Vec<Span> {
        let mut sorted = items.to_vec();
        sorted.sort();
        let mut out: Vec<Span> = Vec::new();
        for (first, last) in sorted {
            match out.last_mut() {
                Some(previous) if previous.1 == u128::MAX || first <= previous.1 + 1 => {
                    previous.1 = previous.1.max(last);
                }
                _ => out.push((first, last)),
            }
        }
        out
    }
}

impl Pieces for (Span, Span) {
    fn union(items: &[(Span, Span)]) -> Vec<(Span, Span)> {
        merge_adjacent(sweep(items, |r| r.0, |r| r.1))
            .into_iter()
            .flat_map(|(first, seconds)| seconds.into_iter().map(move |s| (first, s)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn flow(a: (u8, u8), p: (u8, u8), d: (u16, u16)) -> FlowRange {
        let v4 = |n: u8| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n));
        FlowRange {
            addresses: Some((v4(a.0.min(a.1)), v4(a.0.max(a.1)))),
            protocols: (p.0.min(p.1), p.0.max(p.1)),
            ports: (d.0.min(d.1), d.0.max(d.1)),
        }
    }

    fn holds(f: &FlowRange, (a, p, d): (u8, u8, u16)) -> bool {
        let (first, last) = f.addresses.unwrap();
        let a = number(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, a)));
        (number(first)..=number(last)).contains(&a)
            && (f.protocols.0..=f.protocols.1).contains(&p)
            && (f.ports.0..=f.ports.1).contains(&d)
    }

    fn overlap(x: &FlowRange, y: &FlowRange) -> bool {
        let (xa, ya) = (x.addresses.unwrap(), y.addresses.unwrap());
        let meet = |a: (u128, u128), b: (u128, u128)| a.0 <= b.1 && b.0 <= a.1;
        meet((number(xa.0), number(xa.1)), (number(ya.0), number(ya.1)))
            && meet(
                (x.protocols.0 as u128, x.protocols.1 as u128),
                (y.protocols.0 as u128, y.protocols.1 as u128),
            )
            && meet(
                (x.ports.0 as u128, x.ports.1 as u128),
                (y.ports.0 as u128, y.ports.1 as u128),
            )
    }

    #[test]
    fn overlapping_allowances_become_disjoint_and_neighbours_merge() {
        // A whole /24's tcp/443, and one address of it with any protocol and port.
        let wide = flow((0, 255), (6, 6), (443, 443));
        let one = flow((5, 5), (0, 255), (0, 65535));
        let cut = disjoint(&[wide, one]);
        assert_eq!(
            cut,
            [
                flow((0, 4), (6, 6), (443, 443)),
                flow((5, 5), (0, 255), (0, 65535)),
                flow((6, 255), (6, 6), (443, 443)),
            ]
            .into()
        );
        // Two neighbouring addresses with the same service are one element.
        let pair = disjoint(&[
            flow((1, 1), (17, 17), (53, 53)),
            flow((2, 2), (17, 17), (53, 53)),
        ]);
        assert_eq!(pair, [flow((1, 2), (17, 17), (53, 53))].into());
    }

    proptest! {
        /// The cut covers exactly the union, and no two of its elements overlap.
        #[test]
        fn the_cut_is_the_union_and_disjoint(
            boxes in proptest::collection::vec(
                ((0u8..12, 0u8..12), (0u8..4, 0u8..4), (0u16..6, 0u16..6)), 1..8),
        ) {
            let flows: Vec<FlowRange> = boxes.iter().map(|(a, p, d)| flow(*a, *p, *d)).collect();
            let cut: Vec<FlowRange> = disjoint(&flows).into_iter().collect();
            for (i, x) in cut.iter().enumerate() {
                for y in &cut[i + 1..] {
                    prop_assert!(!overlap(x, y), "{:?} overlaps {:?}", x, y);
                }
            }
            for a in 0u8..13 {
                for p in 0u8..5 {
                    for d in 0u16..7 {
                        let point = (a, p, d);
                        let wanted = flows.iter().any(|f| holds(f, point));
                        let got = cut.iter().any(|f| holds(f, point));
                        prop_assert_eq!(wanted, got, "{:?}", point);
                    }
                }
            }
        }
    }
}
