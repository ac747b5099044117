//! A browser's `User-Agent` in words ("Linux computer", "Firefox 128"), parsed by woothee.

/// What a sign-in's user agent says about where it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub device: String,
    pub browser: String,
}

const UNKNOWN: &str = "UNKNOWN";

/// Device and browser in words; `Unknown` for what the string does not say.
pub fn describe(user_agent: &str) -> Described {
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let Some(ua) = parsed else {
        return Described {
            device: "Unknown device".to_owned(),
            browser: "Unknown browser".to_owned(),
        };
    };
    let kind = match ua.category {
        "pc" => "computer",
        "smartphone" => "phone",
        "mobilephone" => "mobile phone",
        "appliance" => "device",
        "crawler" => "robot",
        _ => "device",
    };
    let device = match ua.os {
        UNKNOWN | "" => format!("Unknown {kind}"),
        os => format!("{os} {kind}"),
    };
    let major = ua.version.split('.').next().unwrap_or("");
    let browser = match (ua.name, major) {
        (UNKNOWN | "", _) => "Unknown browser".to_owned(),
        (name, UNKNOWN | "") => name.to_owned(),
        (name, major) => format!("{name} {major}"),
    };
    Described { device, browser }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_browsers_read_as_words() {
        let firefox =
            describe("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0");
        assert_eq!(firefox.device, "Linux computer");
        assert_eq!(firefox.browser, "Firefox 128");
        let iphone = describe(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        );
        assert_eq!(iphone.device, "iPhone phone");
        assert!(iphone.browser.starts_with("Safari"), "{iphone:?}");
        let nothing = describe("");
        assert_eq!(nothing.device, "Unknown device");
        assert_eq!(nothing.browser, "Unknown browser");
    }
}
