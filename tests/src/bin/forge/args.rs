//! The command line: `--name value` options and `--name` switches.

use std::collections::BTreeMap;

use crate::frames::Mac;
use crate::{usage, Failure};

/// `--name value` options and `--name` switches of one subcommand.
pub(crate) struct Options {
    values: BTreeMap<String, String>,
    switches: Vec<String>,
}

impl Options {
    pub(crate) fn parse(
        args: &[String],
        values: &[&str],
        switches: &[&str],
    ) -> Result<Options, Failure> {
        let mut options = Options {
            values: BTreeMap::new(),
            switches: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| usage(format!("`{arg}` is not an option")))?;
            if switches.contains(&name) {
                options.switches.push(name.to_string());
            } else if values.contains(&name) {
                let value = args
                    .next()
                    .ok_or_else(|| usage(format!("--{name} needs a value")))?;
                if options.values.insert(name.into(), value.clone()).is_some() {
                    return Err(usage(format!("--{name} given twice")));
                }
            } else {
                return Err(usage(format!("unknown option --{name}")));
            }
        }
        Ok(options)
    }

    pub(crate) fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub(crate) fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    pub(crate) fn required(&self, name: &str) -> Result<&str, Failure> {
        self.value(name)
            .ok_or_else(|| usage(format!("--{name} is required")))
    }

    pub(crate) fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<T, Failure> {
        let text = self.required(name)?;
        text.parse()
            .map_err(|_| usage(format!("--{name}: cannot read `{text}`")))
    }

    pub(crate) fn parsed_or<T: std::str::FromStr>(
        &self,
        name: &str,
        default: T,
    ) -> Result<T, Failure> {
        match self.value(name) {
            Some(_) => self.parsed(name),
            None => Ok(default),
        }
    }

    pub(crate) fn number_or<T: TryFrom<u64>>(&self, name: &str, default: T) -> Result<T, Failure> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => parse_number(text)
                .and_then(|n| T::try_from(n).ok())
                .ok_or_else(|| usage(format!("--{name}: `{text}` is not a number in range"))),
        }
    }

    pub(crate) fn optional_mac(&self, name: &str) -> Result<Option<Mac>, Failure> {
        self.value(name)
            .map(|text| Mac::parse(text).ok_or_else(|| usage(format!("--{name}: `{text}`"))))
            .transpose()
    }

    pub(crate) fn mac(&self, name: &str) -> Result<Mac, Failure> {
        self.optional_mac(name)?
            .ok_or_else(|| usage(format!("--{name} is required")))
    }

    pub(crate) fn mac_or(&self, name: &str, default: Mac) -> Result<Mac, Failure> {
        Ok(self.optional_mac(name)?.unwrap_or(default))
    }
}

/// A decimal number, or a hexadecimal one after `0x`.
pub(crate) fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_strictly() {
        let args: Vec<String> = ["--iface", "eth0", "--override", "--count", "0x10"]
            .map(String::from)
            .to_vec();
        let options = Options::parse(&args, &["iface", "count"], &["override"]).unwrap();
        assert!(options.switch("override"));
        assert_eq!(options.number_or::<u64>("count", 1).unwrap(), 16);
        let unknown: Vec<String> = ["--bogus", "1"].map(String::from).to_vec();
        assert!(matches!(
            Options::parse(&unknown, &["iface"], &[]),
            Err(Failure::Usage(_))
        ));
        let twice: Vec<String> = ["--iface", "a", "--iface", "b"].map(String::from).to_vec();
        assert!(Options::parse(&twice, &["iface"], &[]).is_err());
    }
}
