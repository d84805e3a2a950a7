//! French and English. Every text of the console is written as `lang.pick(french, english)`
//! where it is used, so the two stay side by side. The language is the one the user picked
//! (`?lang=`, kept in a cookie), else the browser's first of `fr`/`en` in `Accept-Language`,
//! else `[console] language`.

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

/// The cookie that keeps the language a user picked.
pub const LANG_COOKIE: &str = "ob_lang";

impl Lang {
    /// `fr` or `en`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    /// Reads `fr` or `en` (case-insensitive, region ignored: `en-GB`).
    pub fn parse(text: &str) -> Option<Lang> {
        let primary = text.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "fr" => Some(Lang::Fr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The text in this language.
    pub fn pick<'t>(self, fr: &'t str, en: &'t str) -> &'t str {
        match self {
            Lang::Fr => fr,
            Lang::En => en,
        }
    }

    /// The other language (the switch link).
    pub fn other(self) -> Lang {
        match self {
            Lang::Fr => Lang::En,
            Lang::En => Lang::Fr,
        }
    }

    /// The first of `fr`/`en` an `Accept-Language` header lists, by order of appearance
    /// (browsers list by preference).
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        header
            .split(',')
            .filter_map(|item| item.split(';').next())
            .find_map(Lang::parse)
    }

    /// The language of a request: chosen (query, cookie), else the browser's, else `default`.
    pub fn negotiate(chosen: Option<&str>, accept_language: Option<&str>, default: Lang) -> Lang {
        chosen
            .and_then(Lang::parse)
            .or_else(|| accept_language.and_then(Lang::from_accept_language))
            .unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::ok_chosen(Some("en"), Some("fr-FR,fr"), Lang::En)]
    #[case::ok_browser(None, Some("de-DE,en-GB;q=0.8,fr;q=0.5"), Lang::En)]
    #[case::ok_browser_fr(None, Some("fr-FR,fr;q=0.9"), Lang::Fr)]
    #[case::err_bad_choice_falls_back(Some("xx"), Some("en"), Lang::En)]
    #[case::err_nothing_default(None, Some("de"), Lang::Fr)]
    fn negotiate(
        #[case] chosen: Option<&str>,
        #[case] accept: Option<&str>,
        #[case] expected: Lang,
    ) {
        assert_eq!(Lang::negotiate(chosen, accept, Lang::Fr), expected);
    }
}
