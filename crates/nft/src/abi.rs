//! Numbers of the kernel's netlink ABI for nftables, in one place for the writer, the canonical
//! reader and the socket. Each block is one namespace of the kernel headers
//! (linux/netlink.h, linux/netfilter/nfnetlink.h, linux/netfilter/nf_tables.h,
//! linux/netfilter/nf_conntrack_common.h) or of `nft`'s own conventions (datatype ids, user
//! data TLVs), and keeps the kernel's names so that each can be looked up there.

// Netlink (linux/netlink.h): message types, header flags, extended-ack attributes.
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
/// In an error reply: only the header of the rejected request is echoed.
pub(crate) const NLM_F_CAPPED: u16 = 0x100;
/// In an error reply: extended-ack attributes follow the echoed request.
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

// nfnetlink (linux/netfilter/nfnetlink.h): the subsystem, batch delimiters.
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;

// Protocol families (linux/netfilter.h), of nfgenmsg and of `meta nfproto`; an IP protocol.
pub(crate) const NFPROTO_UNSPEC: u8 = 0;
pub(crate) const NFPROTO_INET: u8 = 1;
pub(crate) const NFPROTO_IPV4: u8 = 2;
pub(crate) const NFPROTO_BRIDGE: u8 = 7;
pub(crate) const NFPROTO_ARP: u8 = 3;
pub(crate) const NFPROTO_NETDEV: u8 = 5;
pub(crate) const NFPROTO_IPV6: u8 = 10;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;

// Ethernet types (linux/if_ether.h), as they appear on the wire (big-endian).
pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_ARP: u16 = 0x0806;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
// ARP header (linux/if_arp.h): Ethernet hardware, then hardware and protocol address lengths.
pub(crate) const ARPHRD_ETHER: u16 = 1;
pub(crate) const ETH_ALEN: u8 = 6;
pub(crate) const IPV4_ALEN: u8 = 4;

/// The nfgenmsg family of a table of `family`.
pub(crate) fn nfproto(family: enforcer_core::ruleset::TableFamily) -> u8 {
    match family {
        enforcer_core::ruleset::TableFamily::Inet => NFPROTO_INET,
        enforcer_core::ruleset::TableFamily::Bridge => NFPROTO_BRIDGE,
        enforcer_core::ruleset::TableFamily::Arp => NFPROTO_ARP,
    }
}

// NFT_MSG_*: nftables message types (the low byte of nlmsg_type).
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(crate) const NFT_MSG_GETCHAIN: u16 = 4;
pub(crate) const NFT_MSG_DELCHAIN: u16 = 5;
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
pub(crate) const NFT_MSG_GETRULE: u16 = 7;
pub(crate) const NFT_MSG_DELRULE: u16 = 8;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
pub(crate) const NFT_MSG_GETSET: u16 = 10;
pub(crate) const NFT_MSG_DELSET: u16 = 11;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(crate) const NFT_MSG_GETSETELEM: u16 = 13;
pub(crate) const NFT_MSG_DELSETELEM: u16 = 14;
/// Ends each transaction's notifications; also the reply to GETGEN.
pub(crate) const NFT_MSG_NEWGEN: u16 = 15;
pub(crate) const NFT_MSG_GETGEN: u16 = 16;
pub(crate) const NFT_MSG_NEWOBJ: u16 = 18;
pub(crate) const NFT_MSG_DELOBJ: u16 = 20;
pub(crate) const NFT_MSG_NEWFLOWTABLE: u16 = 22;
pub(crate) const NFT_MSG_DELFLOWTABLE: u16 = 24;

// NFTA_TABLE_*, NFT_TABLE_F_* flags, NFTA_GEN_*.
pub(crate) const NFTA_TABLE_NAME: u16 = 1;
pub(crate) const NFTA_TABLE_FLAGS: u16 = 2;
/// A dormant table keeps its chains but none of them is registered on its hook.
pub(crate) const NFT_TABLE_F_DORMANT: u32 = 0x1;
pub(crate) const NFTA_GEN_ID: u16 = 1;
pub(crate) const NFTA_GEN_PROC_PID: u16 = 2;
pub(crate) const NFTA_GEN_PROC_NAME: u16 = 3;
// NFTA_OBJ_NAME, NFTA_FLOWTABLE_NAME (each object's table is attribute 1, as for every kind).
pub(crate) const NFTA_OBJ_NAME: u16 = 2;
pub(crate) const NFTA_FLOWTABLE_NAME: u16 = 2;

// NFTA_CHAIN_*, and NFTA_HOOK_* inside NFTA_CHAIN_HOOK.
pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
pub(crate) const NFTA_CHAIN_HOOK: u16 = 4;
pub(crate) const NFTA_CHAIN_POLICY: u16 = 5;
pub(crate) const NFTA_CHAIN_TYPE: u16 = 7;
pub(crate) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(crate) const NFTA_HOOK_PRIORITY: u16 = 2;

// NFTA_RULE_*; NFTA_LIST_ELEM is each expression of NFTA_RULE_EXPRESSIONS (and each element of
// NFTA_SET_ELEM_LIST_ELEMENTS).
pub(crate) const NFTA_RULE_TABLE: u16 = 1;
pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(crate) const NFTA_RULE_USERDATA: u16 = 7;
pub(crate) const NFTA_LIST_ELEM: u16 = 1;

// NFTA_EXPR_*: an expression's name and its data (the attributes of one of the blocks below).
pub(crate) const NFTA_EXPR_NAME: u16 = 1;
pub(crate) const NFTA_EXPR_DATA: u16 = 2;

// NFTA_SET_*, NFT_SET_* flags.
pub(crate) const NFTA_SET_TABLE: u16 = 1;
pub(crate) const NFTA_SET_NAME: u16 = 2;
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
pub(crate) const NFTA_SET_DATA_TYPE: u16 = 6;
pub(crate) const NFTA_SET_ID: u16 = 10;
pub(crate) const NFTA_SET_USERDATA: u16 = 13;
/// The one expression every element gets (here a counter), or a list of them.
pub(crate) const NFTA_SET_EXPR: u16 = 17;
pub(crate) const NFTA_SET_EXPRESSIONS: u16 = 18;
/// A set's description: for a concatenation of ranges, each field's length
/// (`NFTA_SET_DESC_CONCAT`, a list of `NFTA_SET_FIELD_LEN`).
pub(crate) const NFTA_SET_DESC: u16 = 9;
pub(crate) const NFTA_SET_DESC_CONCAT: u16 = 2;
/// A set's most elements (`size N`).
pub(crate) const NFTA_SET_DESC_SIZE: u16 = 1;
pub(crate) const NFTA_SET_FIELD_LEN: u16 = 1;
pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_MAP: u32 = 0x8;
pub(crate) const NFT_SET_CONCAT: u32 = 0x80;
/// A dynamic set: rules add its elements (`flags dynamic`).
pub(crate) const NFT_SET_EVAL: u32 = 0x20;

// NFTA_DYNSET_* (dynset expression: a rule adds the packet's key to a set).
pub(crate) const NFTA_DYNSET_SET_NAME: u16 = 1;
pub(crate) const NFTA_DYNSET_SET_ID: u16 = 2;
pub(crate) const NFTA_DYNSET_OP: u16 = 3;
pub(crate) const NFTA_DYNSET_SREG_KEY: u16 = 4;
pub(crate) const NFTA_DYNSET_TIMEOUT: u16 = 6;
/// The expression each new element gets (here a counter), evaluated on every later match.
pub(crate) const NFTA_DYNSET_EXPR: u16 = 7;
pub(crate) const NFTA_DYNSET_FLAGS: u16 = 9;
pub(crate) const NFT_DYNSET_OP_ADD: u32 = 0;

// NFTA_SET_ELEM_LIST_*: a batch of elements of one set.
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;

// NFTA_SET_ELEM_*: one element.
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
pub(crate) const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// The last key of a range element of a concatenation of ranges (inclusive).
pub(crate) const NFTA_SET_ELEM_KEY_END: u16 = 10;
/// An element's own expression (one), or list of them.
pub(crate) const NFTA_SET_ELEM_EXPR: u16 = 7;
pub(crate) const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;

// NFTA_DATA_* (a value or a verdict), NFTA_VERDICT_* inside NFTA_DATA_VERDICT, and the verdict
// codes (NF_* from linux/netfilter.h, NFT_* from nf_tables.h).
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;
pub(crate) const NF_DROP: i32 = 0;
pub(crate) const NF_ACCEPT: i32 = 1;
pub(crate) const NFT_JUMP: i32 = -3;
pub(crate) const NFT_GOTO: i32 = -4;
pub(crate) const NFT_RETURN: i32 = -5;
pub(crate) const NFT_CONTINUE: i32 = -1;
/// The data type of a verdict map (`NFT_DATA_VERDICT`).
pub(crate) const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

// Registers (enum nft_registers): the verdict, the 16-byte registers 1 and 2, and the 32-bit
// registers that overlay them (`NFT_REG32_00` is register 1's first 4 bytes): each part of a
// concatenation goes into the 32-bit registers after the previous part's.
pub(crate) const NFT_REG_VERDICT: u32 = 0;
pub(crate) const NFT_REG_1: u32 = 1;
pub(crate) const NFT_REG_2: u32 = 2;
pub(crate) const NFT_REG32_00: u32 = 8;

// NFTA_META_* (meta expression), NFT_META_* keys.
pub(crate) const NFTA_META_DREG: u16 = 1;
pub(crate) const NFTA_META_KEY: u16 = 2;
pub(crate) const NFT_META_PROTOCOL: u32 = 1;
pub(crate) const NFT_META_IIFNAME: u32 = 6;
pub(crate) const NFT_META_OIFNAME: u32 = 7;
pub(crate) const NFT_META_NFPROTO: u32 = 15;
pub(crate) const NFT_META_L4PROTO: u32 = 16;

// NFTA_CMP_* (cmp expression), NFT_CMP_* operators.
pub(crate) const NFTA_CMP_SREG: u16 = 1;
pub(crate) const NFTA_CMP_OP: u16 = 2;
pub(crate) const NFTA_CMP_DATA: u16 = 3;
pub(crate) const NFT_CMP_EQ: u32 = 0;
pub(crate) const NFT_CMP_NEQ: u32 = 1;
pub(crate) const NFT_CMP_LTE: u32 = 3;
pub(crate) const NFT_CMP_GTE: u32 = 5;

// NFTA_PAYLOAD_* (payload expression), NFT_PAYLOAD_* bases.
pub(crate) const NFTA_PAYLOAD_DREG: u16 = 1;
pub(crate) const NFTA_PAYLOAD_BASE: u16 = 2;
pub(crate) const NFTA_PAYLOAD_OFFSET: u16 = 3;
pub(crate) const NFTA_PAYLOAD_LEN: u16 = 4;
pub(crate) const NFT_PAYLOAD_LL_HEADER: u32 = 0;
pub(crate) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

// NFTA_BITWISE_* (bitwise expression: `(sreg & mask) ^ xor` into dreg).
pub(crate) const NFTA_BITWISE_SREG: u16 = 1;
pub(crate) const NFTA_BITWISE_DREG: u16 = 2;
pub(crate) const NFTA_BITWISE_LEN: u16 = 3;
pub(crate) const NFTA_BITWISE_MASK: u16 = 4;
pub(crate) const NFTA_BITWISE_XOR: u16 = 5;
/// Dumped by the kernel even when 0 (the mask-and-xor operation), never written here.
pub(crate) const NFTA_BITWISE_OP: u16 = 6;

// NFTA_BYTEORDER_* (byteorder expression), NFT_BYTEORDER_* operations.
pub(crate) const NFTA_BYTEORDER_SREG: u16 = 1;
pub(crate) const NFTA_BYTEORDER_DREG: u16 = 2;
pub(crate) const NFTA_BYTEORDER_OP: u16 = 3;
pub(crate) const NFTA_BYTEORDER_LEN: u16 = 4;
pub(crate) const NFTA_BYTEORDER_SIZE: u16 = 5;
pub(crate) const NFT_BYTEORDER_HTON: u32 = 1;

// NFTA_LOOKUP_* (lookup expression), NFT_LOOKUP_F_* flags.
pub(crate) const NFTA_LOOKUP_SET: u16 = 1;
pub(crate) const NFTA_LOOKUP_SREG: u16 = 2;
pub(crate) const NFTA_LOOKUP_DREG: u16 = 3;
pub(crate) const NFTA_LOOKUP_SET_ID: u16 = 4;
pub(crate) const NFTA_LOOKUP_FLAGS: u16 = 5;
/// The lookup matches when the key is absent (`!= @set`).
pub(crate) const NFT_LOOKUP_F_INV: u32 = 1;

// NFTA_CT_* (ct expression), NFT_CT_* keys, and the `ct state` bits
// (linux/netfilter/nf_conntrack_common.h: `NF_CT_STATE_BIT(IP_CT_ESTABLISHED)` and so on).
pub(crate) const NFTA_CT_DREG: u16 = 1;
pub(crate) const NFTA_CT_KEY: u16 = 2;
pub(crate) const NFT_CT_STATE: u32 = 0;
pub(crate) const NF_CT_STATE_INVALID_BIT: u32 = 1;
pub(crate) const NF_CT_STATE_ESTABLISHED_BIT: u32 = 2;
pub(crate) const NF_CT_STATE_RELATED_BIT: u32 = 4;

// NFTA_LIMIT_* (limit expression) and its packet type.
pub(crate) const NFTA_LIMIT_RATE: u16 = 1;
pub(crate) const NFTA_LIMIT_UNIT: u16 = 2;
pub(crate) const NFTA_LIMIT_BURST: u16 = 3;
pub(crate) const NFTA_LIMIT_TYPE: u16 = 4;
pub(crate) const NFTA_LIMIT_FLAGS: u16 = 5;
pub(crate) const NFT_LIMIT_PKTS: u32 = 0;
// NFTA_LOG_* (log expression).
pub(crate) const NFTA_LOG_GROUP: u16 = 1;
pub(crate) const NFTA_LOG_PREFIX: u16 = 2;

// NFTA_COUNTER_* (counter expression, in rules, in a set's template and in elements).
pub(crate) const NFTA_COUNTER_BYTES: u16 = 1;
pub(crate) const NFTA_COUNTER_PACKETS: u16 = 2;

// NFTA_IMMEDIATE_* (immediate expression: here always a verdict).
pub(crate) const NFTA_IMMEDIATE_DREG: u16 = 1;
pub(crate) const NFTA_IMMEDIATE_DATA: u16 = 2;

// nftables datatype ids as `nft` shows them (nft's datatype.h): `ipv4_addr`, `ipv6_addr`,
// `ifname` (keys of IFNAMSIZ bytes). A concatenation's id packs its parts' ids, 6 bits each.
pub(crate) const TYPE_IPADDR: u32 = 7;
pub(crate) const TYPE_IP6ADDR: u32 = 8;
pub(crate) const TYPE_INET_PROTO: u32 = 12;
pub(crate) const TYPE_INET_SERVICE: u32 = 13;
pub(crate) const TYPE_IFNAME: u32 = 41;
pub(crate) const TYPE_BITS: u32 = 6;
pub(crate) const IFNAME_LEN: usize = 16;

// User-data TLVs of libnftnl: a rule's or element's comment (NFTNL_UDATA_RULE_COMMENT and
// NFTNL_UDATA_SET_ELEM_COMMENT are both 0), a set's key byte order (`nft` reads string keys,
// interface names, backwards without it) and its host-order value.
pub(crate) const NFTNL_UDATA_COMMENT: u8 = 0;
pub(crate) const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
pub(crate) const BYTEORDER_HOST_ENDIAN: u32 = 1;
