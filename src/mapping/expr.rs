//! The expression language of mapping files, parsed once at load into an [`Expr`] tree that
//! the evaluator walks for every message.
//!
//! Accepted (by precedence, loosest first):
//!
//! - `a or b`, `a and b`, `not a` (conditions; `and`/`or` stop early);
//! - `a == b`, `a != b` (compare as text; a missing value equals `''`);
//! - `a ~ b ~ …` (concatenation; a missing part adds nothing);
//! - `value | function | function(arg, …)` (pipes bind tighter than `~`, as in Jinja);
//! - values: paths (`census.ipp`, `line.dosages[1].text`, `prescription.lines[].id`), texts
//!   in single or double quotes (a doubled quote is a quote: `'l''unité'`), whole numbers,
//!   and parentheses.
//!
//! Path indexes are 1-based like HL7 paths (`[1]` is the first item); `[]` walks every item
//! and gives a list, which only `join`, `first` and `count` take. Names are resolved at load:
//! a root of the mapping's input context (`prescription`, `census`, `message` for a push;
//! `user`, `patient`, `launch` for a launch, whose keys are checked too) or a group variable and its
//! `<name>_index`. Function arguments that name things (maps, formats, separators) must be
//! literals so they are checked at load.
//!
//! Deliberately not accepted: arithmetic, regular expressions, user functions, backslash
//! escapes in texts, 0-based indexes.

use std::fmt;

use jiff::fmt::strtime::BrokenDownTime;
use jiff::tz::TimeZone;

use super::context::Inputs;

/// Words with a meaning in expressions, refused as group variable names.
pub(crate) const KEYWORDS: [&str; 3] = ["and", "or", "not"];

const FUNCTIONS: &str = "`count`, `date`, `datetime`, `default`, `first`, `join`, `lower`, \
    `map`, `replace`, `trim`, `truncate`, `upper`";

/// How deep parentheses and `not` may nest; hostile input must not exhaust the stack.
const MAX_NESTING: usize = 32;

/// A compiled expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Path(PathExpr),
    Text(Box<str>),
    Int(i64),
    Concat(Vec<Expr>),
    Pipe(Box<Expr>, Func),
    Compare {
        left: Box<Expr>,
        right: Box<Expr>,
        equal: bool,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A path into the context or a group variable, names resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PathExpr {
    pub(crate) root: Root,
    pub(crate) steps: Vec<Step>,
    /// The path as written, for error messages.
    pub(crate) text: Box<str>,
}

impl PathExpr {
    /// True when the path walks a list with `[]`.
    pub(crate) fn spreads(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Each))
    }
}

/// Where a path starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Root {
    /// A key of the context object (`prescription`).
    Context(Box<str>),
    /// The current item of the group at this nesting depth (0 = outermost).
    Item(usize),
    /// The 1-based index of that item.
    Index(usize),
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Key(Box<str>),
    /// 0-based here; written 1-based.
    Index(usize),
    /// `[]`: every item.
    Each,
}

/// A function applied with `|`, arguments checked at load.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Func {
    Default(Box<Expr>),
    /// Index into the mapping's maps.
    Map(usize),
    Upper,
    Lower,
    Trim,
    /// Characters kept.
    Truncate(usize),
    Join(Box<str>),
    DateTime(Box<str>),
    Date(Box<str>),
    Replace(Box<str>, Box<str>),
    First,
    Count,
}

/// The names an expression may use where it is written.
pub(crate) struct Names<'n> {
    /// The mapping's input context, whose roots every expression may name.
    pub(crate) inputs: Inputs,
    /// Group variables, outermost first (index = depth).
    pub(crate) vars: &'n [String],
    /// Names of the `[maps.…]` tables, in their order.
    pub(crate) maps: &'n [String],
}

/// Why an expression is refused; the message says what and at which character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExprError(pub(crate) String);

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed expression and what it needs at run time.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) expr: Expr,
    /// Uses `datetime` or `date`, so the time zone must be resolved at load.
    pub(crate) uses_time: bool,
}

/// Parses and checks an expression that gives one value.
pub(crate) fn parse(src: &str, names: &Names<'_>) -> Result<Parsed, ExprError> {
    let mut p = Parser::new(src, names);
    let node = p.or()?;
    p.end()?;
    let node = p.scalar(node)?;
    Ok(Parsed {
        expr: node.expr,
        uses_time: p.uses_time,
    })
}

/// Parses a plain path (a group's `for_each`): no functions, operators or `[]`.
pub(crate) fn parse_path(src: &str, names: &Names<'_>) -> Result<PathExpr, ExprError> {
    let mut p = Parser::new(src, names);
    let node = p.or()?;
    p.end()?;
    match node.expr {
        Expr::Path(path) if matches!(path.root, Root::Index(_)) => Err(ExprError(format!(
            "`{}` is a number, not a list: `for_each` needs a path to a list such as `prescription.lines`",
            path.text
        ))),
        Expr::Path(path) if path.spreads() => Err(ExprError(format!(
            "`{}` has `[]`: `for_each` takes the path of the list itself, such as `prescription.lines`",
            path.text
        ))),
        Expr::Path(path) => Ok(path),
        _ => Err(ExprError(format!(
            "`{src}` is not a path: `for_each` takes the path of a list, such as `prescription.lines`"
        ))),
    }
}

/// A parsed piece with where it came from, to quote it in errors.
struct Node {
    expr: Expr,
    /// Gives a list (`[]` path or a function of one that keeps it a list).
    list: bool,
    start: usize,
    end: usize,
}

struct Parser<'s, 'n> {
    src: &'s str,
    pos: usize,
    nesting: usize,
    names: &'n Names<'n>,
    uses_time: bool,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'s, 'n> Parser<'s, 'n> {
    fn new(src: &'s str, names: &'n Names<'n>) -> Self {
        Parser {
            src,
            pos: 0,
            nesting: 0,
            names,
            uses_time: false,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + ahead).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    /// The 1-based character number of a byte offset, for messages.
    fn char_no(&self, pos: usize) -> usize {
        self.src.get(..pos).map_or(pos, |s| s.chars().count()) + 1
    }

    fn fail<T>(&self, pos: usize, what: impl fmt::Display, hint: &str) -> Result<T, ExprError> {
        let mut message = format!("{what} at character {}", self.char_no(pos));
        if !hint.is_empty() {
            message.push_str(": ");
            message.push_str(hint);
        }
        Err(ExprError(message))
    }

    /// What is at `pos`, readable, for "unexpected" messages.
    fn found(&self, pos: usize) -> String {
        match self.src.get(pos..).and_then(|rest| rest.chars().next()) {
            None => "the end".to_string(),
            Some(c) => {
                let mut buf = [0u8; 4];
                format!(
                    "`{}`",
                    crate::hl7::readable(c.encode_utf8(&mut buf).as_bytes())
                )
            }
        }
    }

    fn text_of(&self, node: &Node) -> &'s str {
        self.src
            .get(node.start..node.end)
            .unwrap_or(self.src)
            .trim()
    }

    /// Refuses a list where one value is needed.
    fn scalar(&self, node: Node) -> Result<Node, ExprError> {
        if node.list {
            return self.fail(
                node.start,
                format_args!("`{}` is a list", self.text_of(&node)),
                "follow it with `join(', ')`, `first` or `count`",
            );
        }
        Ok(node)
    }

    fn end(&mut self) -> Result<(), ExprError> {
        self.skip_ws();
        if self.pos < self.src.len() {
            return self.fail(
                self.pos,
                format_args!("unexpected {}", self.found(self.pos)),
                "expected `|`, `~`, `==`, `!=`, `and`, `or` or the end",
            );
        }
        Ok(())
    }

    /// Consumes the word `kw` when it is next (and not the start of a longer name).
    fn keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let rest = self.src.as_bytes().get(self.pos..).unwrap_or_default();
        let matches =
            rest.starts_with(kw.as_bytes()) && !rest.get(kw.len()).copied().is_some_and(is_ident);
        if matches {
            self.pos += kw.len();
        }
        matches
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return self.fail(
                self.pos,
                "expression nests too deeply",
                "use at most 32 levels of parentheses and `not`",
            );
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = self.binary(left, right, Expr::Or)?;
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            let right = self.not()?;
            left = self.binary(left, right, Expr::And)?;
        }
        Ok(left)
    }

    fn binary(
        &self,
        left: Node,
        right: Node,
        make: fn(Box<Expr>, Box<Expr>) -> Expr,
    ) -> Result<Node, ExprError> {
        let left = self.scalar(left)?;
        let right = self.scalar(right)?;
        Ok(Node {
            start: left.start,
            end: right.end,
            list: false,
            expr: make(Box::new(left.expr), Box::new(right.expr)),
        })
    }

    fn not(&mut self) -> Result<Node, ExprError> {
        self.skip_ws();
        let start = self.pos;
        if self.keyword("not") {
            self.enter()?;
            let inner = self.not()?;
            self.nesting -= 1;
            let inner = self.scalar(inner)?;
            return Ok(Node {
                start,
                end: inner.end,
                list: false,
                expr: Expr::Not(Box::new(inner.expr)),
            });
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Node, ExprError> {
        let left = self.concat()?;
        self.skip_ws();
        let equal = match (self.peek(), self.peek_at(1)) {
            (Some(b'='), Some(b'=')) => true,
            (Some(b'!'), Some(b'=')) => false,
            (Some(b'='), _) => {
                return self.fail(self.pos, "unexpected `=`", "compare with `==`");
            }
            _ => return Ok(left),
        };
        self.pos += 2;
        let right = self.concat()?;
        let left = self.scalar(left)?;
        let right = self.scalar(right)?;
        Ok(Node {
            start: left.start,
            end: right.end,
            list: false,
            expr: Expr::Compare {
                left: Box::new(left.expr),
                right: Box::new(right.expr),
                equal,
            },
        })
    }

    fn concat(&mut self) -> Result<Node, ExprError> {
        let first = self.pipe()?;
        self.skip_ws();
        if self.peek() != Some(b'~') {
            return Ok(first);
        }
        let first = self.scalar(first)?;
        let start = first.start;
        let mut end = first.end;
        let mut parts = vec![first.expr];
        while {
            self.skip_ws();
            self.peek() == Some(b'~')
        } {
            self.pos += 1;
            let part = self.pipe()?;
            let part = self.scalar(part)?;
            end = part.end;
            parts.push(part.expr);
        }
        Ok(Node {
            start,
            end,
            list: false,
            expr: Expr::Concat(parts),
        })
    }

    fn pipe(&mut self) -> Result<Node, ExprError> {
        let mut node = self.atom()?;
        loop {
            self.skip_ws();
            if self.peek() != Some(b'|') {
                return Ok(node);
            }
            self.pos += 1;
            self.skip_ws();
            let name_pos = self.pos;
            let Some(name) = self.ident() else {
                return self.fail(
                    self.pos,
                    format_args!(
                        "expected a function name after `|`, found {}",
                        self.found(self.pos)
                    ),
                    "",
                );
            };
            let mut args = Vec::new();
            self.skip_ws();
            if self.peek() == Some(b'(') {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some(b')') {
                    self.pos += 1;
                } else {
                    loop {
                        self.enter()?;
                        let arg = self.or()?;
                        self.nesting -= 1;
                        args.push(arg);
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b')') => {
                                self.pos += 1;
                                break;
                            }
                            _ => {
                                return self.fail(
                                    self.pos,
                                    format_args!("unexpected {}", self.found(self.pos)),
                                    &format!(
                                        "expected `,` or `)` to end the arguments of `{name}`"
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            node = self.call(node, name, name_pos, args)?;
        }
    }

    fn ident(&mut self) -> Option<&'s str> {
        let start = self.pos;
        if !self.peek().is_some_and(is_ident_start) {
            return None;
        }
        while self.peek().is_some_and(is_ident) {
            self.pos += 1;
        }
        self.src.get(start..self.pos)
    }

    fn call(
        &mut self,
        input: Node,
        name: &str,
        name_pos: usize,
        args: Vec<Node>,
    ) -> Result<Node, ExprError> {
        let takes_list = matches!(name, "join" | "first" | "count");
        let input = if takes_list {
            input
        } else {
            self.scalar(input)?
        };
        if name == "default" {
            let mut args = args;
            let arg = match (args.pop(), args.is_empty()) {
                (Some(arg), true) => self.scalar(arg)?,
                _ => return self.usage(name_pos, name, "one value, e.g. `default('inconnu')`"),
            };
            return Ok(Node {
                start: input.start,
                end: self.pos,
                list: false,
                expr: Expr::Pipe(Box::new(input.expr), Func::Default(Box::new(arg.expr))),
            });
        }
        let func = match (name, args.as_slice()) {
            ("upper", []) => Func::Upper,
            ("lower", []) => Func::Lower,
            ("trim", []) => Func::Trim,
            ("first", []) => Func::First,
            ("count", []) => Func::Count,
            ("upper" | "lower" | "trim" | "first" | "count", _) => {
                return self.usage(name_pos, name, "no arguments");
            }
            (
                "map",
                [
                    Node {
                        expr: Expr::Text(map),
                        start,
                        ..
                    },
                ],
            ) => match self.names.maps.iter().position(|m| **m == **map) {
                Some(index) => Func::Map(index),
                None => {
                    let known = if self.names.maps.is_empty() {
                        "the file defines no `[maps.…]` tables".to_string()
                    } else {
                        let names: Vec<String> =
                            self.names.maps.iter().map(|m| format!("`{m}`")).collect();
                        format!("the file defines {}", names.join(", "))
                    };
                    return self.fail(*start, format_args!("unknown map `{map}`"), &known);
                }
            },
            ("map", _) => {
                return self.usage(
                    name_pos,
                    name,
                    "the name of a `[maps.…]` table in quotes, e.g. `map('sex')`",
                );
            }
            (
                "truncate",
                [
                    Node {
                        expr: Expr::Int(n), ..
                    },
                ],
            ) if *n >= 1 => Func::Truncate(usize::try_from(*n).unwrap_or(usize::MAX)),
            ("truncate", _) => {
                return self.usage(
                    name_pos,
                    name,
                    "a number of characters (at least 1), e.g. `truncate(199)`",
                );
            }
            (
                "join",
                [
                    Node {
                        expr: Expr::Text(sep),
                        ..
                    },
                ],
            ) => Func::Join(sep.clone()),
            ("join", _) => {
                return self.usage(name_pos, name, "a separator in quotes, e.g. `join(', ')`");
            }
            (
                "datetime",
                [
                    Node {
                        expr: Expr::Text(f),
                        start,
                        ..
                    },
                ],
            ) => {
                self.check_format(f, true, *start)?;
                self.uses_time = true;
                Func::DateTime(f.clone())
            }
            ("datetime", _) => {
                return self.usage(
                    name_pos,
                    name,
                    "a format in quotes, e.g. `datetime('%Y%m%d%H%M%S')`",
                );
            }
            (
                "date",
                [
                    Node {
                        expr: Expr::Text(f),
                        start,
                        ..
                    },
                ],
            ) => {
                self.check_format(f, false, *start)?;
                self.uses_time = true;
                Func::Date(f.clone())
            }
            ("date", _) => {
                return self.usage(name_pos, name, "a format in quotes, e.g. `date('%Y%m%d')`");
            }
            (
                "replace",
                [
                    Node {
                        expr: Expr::Text(from),
                        ..
                    },
                    Node {
                        expr: Expr::Text(to),
                        ..
                    },
                ],
            ) if !from.is_empty() => Func::Replace(from.clone(), to.clone()),
            ("replace", _) => {
                return self.usage(
                    name_pos,
                    name,
                    "two texts in quotes, the first not empty, e.g. `replace('/', '-')`",
                );
            }
            _ => {
                return self.fail(
                    name_pos,
                    format_args!("unknown function `{name}`"),
                    &format!("expected one of {FUNCTIONS}"),
                );
            }
        };
        let list = input.list && !matches!(func, Func::Join(_) | Func::First | Func::Count);
        Ok(Node {
            start: input.start,
            end: self.pos,
            list,
            expr: Expr::Pipe(Box::new(input.expr), func),
        })
    }

    fn usage<T>(&self, pos: usize, name: &str, takes: &str) -> Result<T, ExprError> {
        self.fail(
            pos,
            format_args!("wrong arguments for `{name}`"),
            &format!("it takes {takes}"),
        )
    }

    /// Formats a fixed moment with `format` so a bad directive is refused at load.
    fn check_format(&self, format: &str, datetime: bool, pos: usize) -> Result<(), ExprError> {
        let (name, example) = if datetime {
            ("datetime", "'%Y%m%d%H%M%S'")
        } else {
            ("date", "'%Y%m%d'")
        };
        if format.is_empty() {
            return self.fail(
                pos,
                format_args!("empty `{name}` format"),
                &format!("write one such as {example}"),
            );
        }
        let mut out = String::new();
        let result = if datetime {
            let zoned = jiff::Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
            BrokenDownTime::from(&zoned).format(format, &mut out)
        } else {
            BrokenDownTime::from(jiff::civil::Date::constant(2024, 1, 2)).format(format, &mut out)
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let hint = if datetime {
                    e.to_string()
                } else {
                    format!("{e} (`date` has no time: use `datetime` for hours and offsets)")
                };
                self.fail(
                    pos,
                    format_args!("invalid `{name}` format `{format}`"),
                    &hint,
                )
            }
        }
    }

    fn atom(&mut self) -> Result<Node, ExprError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => self.text(q),
            Some(b) if b.is_ascii_digit() => self.int(),
            Some(b'(') => {
                self.enter()?;
                self.pos += 1;
                let inner = self.or()?;
                self.nesting -= 1;
                self.skip_ws();
                if self.peek() != Some(b')') {
                    return self.fail(
                        self.pos,
                        format_args!("expected `)`, found {}", self.found(self.pos)),
                        &format!("to close the `(` at character {}", self.char_no(start)),
                    );
                }
                self.pos += 1;
                Ok(Node {
                    start,
                    end: self.pos,
                    ..inner
                })
            }
            Some(b) if is_ident_start(b) => self.path(),
            Some(b'$') if self.peek_at(1) == Some(b'{') => self.fail(
                start,
                "unexpected `${`",
                "`${…}` is not expanded in mapping files: write the value, as a text in quotes",
            ),
            None => self.fail(
                start,
                "expected a value",
                "a path such as `census.ipp`, a text in quotes or a number",
            ),
            Some(_) => self.fail(
                start,
                format_args!("unexpected {}", self.found(start)),
                "expected a path such as `census.ipp`, a text in quotes or a number",
            ),
        }
    }

    fn text(&mut self, quote: u8) -> Result<Node, ExprError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = self.src.as_bytes().get(self.pos..).unwrap_or_default();
            let Some(offset) = memchr::memchr(quote, rest) else {
                return self.fail(
                    start,
                    "unterminated text",
                    &format!("close it with `{}`", char::from(quote)),
                );
            };
            out.push_str(
                self.src
                    .get(self.pos..self.pos + offset)
                    .unwrap_or_default(),
            );
            self.pos += offset + 1;
            if self.peek() == Some(quote) {
                out.push(char::from(quote));
                self.pos += 1;
            } else {
                break;
            }
        }
        Ok(Node {
            start,
            end: self.pos,
            list: false,
            expr: Expr::Text(out.into_boxed_str()),
        })
    }

    fn int(&mut self) -> Result<Node, ExprError> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.src.get(start..self.pos).unwrap_or_default();
        if self.peek().is_some_and(is_ident) {
            return self.fail(
                self.pos,
                format_args!("unexpected {}", self.found(self.pos)),
                "a number is digits only; put other text in quotes",
            );
        }
        match digits.parse::<i64>() {
            Ok(n) => Ok(Node {
                start,
                end: self.pos,
                list: false,
                expr: Expr::Int(n),
            }),
            Err(_) => self.fail(start, format_args!("number `{digits}` is too large"), ""),
        }
    }

    fn path(&mut self) -> Result<Node, ExprError> {
        let start = self.pos;
        let name = self.ident().unwrap_or_default();
        if KEYWORDS.contains(&name) {
            return self.fail(
                start,
                format_args!("expected a value, found `{name}`"),
                "`and`, `or` and `not` join conditions",
            );
        }
        let root = self.root(name, start)?;
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                Some(b'.') => {
                    self.pos += 1;
                    match self.ident() {
                        Some(key) => steps.push(Step::Key(key.into())),
                        None => {
                            return self.fail(
                                self.pos,
                                format_args!(
                                    "expected a name after `.`, found {}",
                                    self.found(self.pos)
                                ),
                                "",
                            );
                        }
                    }
                }
                Some(b'[') => {
                    let open = self.pos;
                    self.pos += 1;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        steps.push(Step::Each);
                        continue;
                    }
                    let digits_start = self.pos;
                    while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    let digits = self.src.get(digits_start..self.pos).unwrap_or_default();
                    if digits.is_empty() || self.peek() != Some(b']') {
                        return self.fail(
                            open,
                            "expected `[n]` or `[]`",
                            "`[1]` is the first item, `[]` every item",
                        );
                    }
                    self.pos += 1;
                    match digits.parse::<usize>() {
                        Ok(0) => {
                            return self.fail(
                                open,
                                "index `[0]`",
                                "indexes are 1-based as in HL7 paths: `[1]` is the first item",
                            );
                        }
                        Ok(n) => steps.push(Step::Index(n - 1)),
                        Err(_) => {
                            return self.fail(
                                open,
                                format_args!("index `{digits}` is too large"),
                                "",
                            );
                        }
                    }
                }
                _ => break,
            }
        }
        let text = self.src.get(start..self.pos).unwrap_or_default();
        if matches!(root, Root::Index(_)) && !steps.is_empty() {
            return self.fail(
                start,
                format_args!("`{name}` is a number"),
                "it has no `.name` or `[n]` after it",
            );
        }
        if let Root::Context(root_name) = &root
            && let Some(keys) = self
                .names
                .inputs
                .roots()
                .iter()
                .find(|r| r.name == &**root_name)
                .and_then(|r| r.keys)
            && let Some(Step::Key(key)) = steps.first()
            && !keys.contains(&&**key)
        {
            let known: Vec<String> = keys.iter().map(|k| format!("`{name}.{k}`")).collect();
            return self.fail(
                start,
                format_args!("unknown name `{name}.{key}`"),
                &format!("expected {}", known.join(", ")),
            );
        }
        let list = steps.iter().any(|s| matches!(s, Step::Each));
        Ok(Node {
            start,
            end: self.pos,
            list,
            expr: Expr::Path(PathExpr {
                root,
                steps,
                text: text.into(),
            }),
        })
    }

    fn root(&self, name: &str, pos: usize) -> Result<Root, ExprError> {
        for (depth, var) in self.names.vars.iter().enumerate().rev() {
            if name == var {
                return Ok(Root::Item(depth));
            }
            if name.strip_suffix("_index") == Some(var.as_str()) {
                return Ok(Root::Index(depth));
            }
        }
        let roots = self.names.inputs.roots();
        if roots.iter().any(|r| r.name == name) {
            return Ok(Root::Context(name.into()));
        }
        let mut known: Vec<String> = roots.iter().map(|r| format!("`{}`", r.name)).collect();
        for var in self.names.vars {
            known.push(format!("`{var}`"));
            known.push(format!("`{var}_index`"));
        }
        let mut hint = format!("expected {}", known.join(", "));
        if let Some(other) = Inputs::ALL
            .into_iter()
            .find(|i| i.roots().iter().any(|r| r.name == name))
        {
            hint.push_str(&format!(
                " (`{name}` is an input of {} mappings: set `[message] input = \"{}\"`)",
                other.name(),
                other.name()
            ));
        }
        self.fail(pos, format_args!("unknown name `{name}`"), &hint)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn names_parse(src: &str) -> Result<Expr, String> {
        let vars = ["line".to_string(), "dosage".to_string()];
        let maps = ["sex".to_string(), "code_system".to_string()];
        let names = Names {
            inputs: Inputs::Push,
            vars: &vars,
            maps: &maps,
        };
        parse(src, &names).map(|p| p.expr).map_err(|e| e.0)
    }

    fn path(root: Root, steps: Vec<Step>, text: &str) -> Expr {
        Expr::Path(PathExpr {
            root,
            steps,
            text: text.into(),
        })
    }

    fn ctx(key: &str, steps: &[&str], text: &str) -> Expr {
        path(
            Root::Context(key.into()),
            steps.iter().map(|s| Step::Key((*s).into())).collect(),
            text,
        )
    }

    fn text(s: &str) -> Expr {
        Expr::Text(s.into())
    }

    #[rstest]
    #[case::ok_path("census.ipp", ctx("census", &["ipp"], "census.ipp"))]
    #[case::ok_literal("'CH_EXEMPLE'", text("CH_EXEMPLE"))]
    #[case::ok_double_quotes("\"a'b\"", text("a'b"))]
    #[case::ok_doubled_quote("'l''unité'", text("l'unité"))]
    #[case::ok_number("42", Expr::Int(42))]
    #[case::ok_index(
        "line.dosages[2].text",
        path(
            Root::Item(0),
            vec![Step::Key("dosages".into()), Step::Index(1), Step::Key("text".into())],
            "line.dosages[2].text"
        )
    )]
    #[case::ok_group_index("dosage_index", path(Root::Index(1), vec![], "dosage_index"))]
    #[case::ok_concat(
        "prescription.id ~ '-' ~ line_index",
        Expr::Concat(vec![
            ctx("prescription", &["id"], "prescription.id"),
            text("-"),
            path(Root::Index(0), vec![], "line_index"),
        ])
    )]
    #[case::ok_pipe_binds_tighter(
        "census.family ~ census.given | upper",
        Expr::Concat(vec![
            ctx("census", &["family"], "census.family"),
            Expr::Pipe(Box::new(ctx("census", &["given"], "census.given")), Func::Upper),
        ])
    )]
    #[case::ok_parentheses(
        "(census.family ~ ' ') | upper()",
        Expr::Pipe(
            Box::new(Expr::Concat(vec![ctx("census", &["family"], "census.family"), text(" ")])),
            Func::Upper
        )
    )]
    #[case::ok_map("census.sex | map('sex')", Expr::Pipe(Box::new(ctx("census", &["sex"], "census.sex")), Func::Map(0)))]
    #[case::ok_default_expr(
        "census.nda | default(census.ipp)",
        Expr::Pipe(
            Box::new(ctx("census", &["nda"], "census.nda")),
            Func::Default(Box::new(ctx("census", &["ipp"], "census.ipp")))
        )
    )]
    #[case::ok_join_spread(
        "prescription.lines[].id | join(', ')",
        Expr::Pipe(
            Box::new(path(
                Root::Context("prescription".into()),
                vec![Step::Key("lines".into()), Step::Each, Step::Key("id".into())],
                "prescription.lines[].id"
            )),
            Func::Join(", ".into())
        )
    )]
    #[case::ok_replace_truncate(
        "census.unit | replace('/', '-') | truncate(3)",
        Expr::Pipe(
            Box::new(Expr::Pipe(
                Box::new(ctx("census", &["unit"], "census.unit")),
                Func::Replace("/".into(), "-".into())
            )),
            Func::Truncate(3)
        )
    )]
    #[case::ok_compare(
        "census.sex == 'F'",
        Expr::Compare {
            left: Box::new(ctx("census", &["sex"], "census.sex")),
            right: Box::new(text("F")),
            equal: true
        }
    )]
    #[case::ok_logic(
        "not census.nda and census.ipp != '' or census.unit",
        Expr::Or(
            Box::new(Expr::And(
                Box::new(Expr::Not(Box::new(ctx("census", &["nda"], "census.nda")))),
                Box::new(Expr::Compare {
                    left: Box::new(ctx("census", &["ipp"], "census.ipp")),
                    right: Box::new(text("")),
                    equal: false
                })
            )),
            Box::new(ctx("census", &["unit"], "census.unit"))
        )
    )]
    #[case::ok_keyword_prefix_is_a_name(
        "line.order",
        path(Root::Item(0), vec![Step::Key("order".into())], "line.order")
    )]
    fn ok_parse(#[case] src: &str, #[case] expected: Expr) {
        assert_eq!(names_parse(src).unwrap(), expected);
    }

    #[rstest]
    #[case::err_empty(
        "",
        "expected a value at character 1: a path such as `census.ipp`, a text in quotes or a number"
    )]
    #[case::err_unknown_root(
        "lin.medication",
        "unknown name `lin` at character 1: expected `prescription`, `census`, `message`, `document`, `line`, `line_index`, `dosage`, `dosage_index`"
    )]
    #[case::err_unknown_function(
        "census.sex | mapp('sex')",
        "unknown function `mapp` at character 14: expected one of `count`, `date`, `datetime`, `default`, `first`, `join`, `lower`, `map`, `replace`, `trim`, `truncate`, `upper`"
    )]
    #[case::err_unknown_map(
        "census.sex | map('sexe')",
        "unknown map `sexe` at character 18: the file defines `sex`, `code_system`"
    )]
    #[case::err_map_not_literal(
        "census.sex | map(census.unit)",
        "wrong arguments for `map` at character 14: it takes the name of a `[maps.…]` table in quotes, e.g. `map('sex')`"
    )]
    #[case::err_truncate_zero(
        "census.unit | truncate(0)",
        "wrong arguments for `truncate` at character 15: it takes a number of characters (at least 1), e.g. `truncate(199)`"
    )]
    #[case::err_upper_args(
        "census.unit | upper(2)",
        "wrong arguments for `upper` at character 15: it takes no arguments"
    )]
    #[case::err_unterminated("'abc", "unterminated text at character 1: close it with `'`")]
    #[case::err_zero_index(
        "line.dosages[0].text",
        "index `[0]` at character 13: indexes are 1-based as in HL7 paths: `[1]` is the first item"
    )]
    #[case::err_bad_index(
        "line.dosages[x]",
        "expected `[n]` or `[]` at character 13: `[1]` is the first item, `[]` every item"
    )]
    #[case::err_trailing(
        "census.ipp census.nda",
        "unexpected `c` at character 12: expected `|`, `~`, `==`, `!=`, `and`, `or` or the end"
    )]
    #[case::err_single_equal(
        "census.sex = 'F'",
        "unexpected `=` at character 12: compare with `==`"
    )]
    #[case::err_list_alone(
        "prescription.lines[].id",
        "`prescription.lines[].id` is a list at character 1: follow it with `join(', ')`, `first` or `count`"
    )]
    #[case::err_list_upper(
        "prescription.lines[].id | upper",
        "`prescription.lines[].id` is a list at character 1: follow it with `join(', ')`, `first` or `count`"
    )]
    #[case::err_list_concat(
        "'x' ~ prescription.lines[].id",
        "`prescription.lines[].id` is a list at character 7: follow it with `join(', ')`, `first` or `count`"
    )]
    #[case::err_index_has_fields(
        "line_index.x",
        "`line_index` is a number at character 1: it has no `.name` or `[n]` after it"
    )]
    #[case::err_dot_nothing("census.", "expected a name after `.`, found the end at character 8")]
    #[case::err_pipe_nothing(
        "census.ipp |",
        "expected a function name after `|`, found the end at character 13"
    )]
    #[case::err_unclosed_paren(
        "(census.ipp",
        "expected `)`, found the end at character 12: to close the `(` at character 1"
    )]
    #[case::err_unclosed_args(
        "census.ipp | default('x'",
        "unexpected the end at character 25: expected `,` or `)` to end the arguments of `default`"
    )]
    #[case::err_keyword_value(
        "and",
        "expected a value, found `and` at character 1: `and`, `or` and `not` join conditions"
    )]
    #[case::err_control_char(
        "census.ipp\u{b}",
        "unexpected `\\x0B` at character 11: expected `|`, `~`, `==`, `!=`, `and`, `or` or the end"
    )]
    #[case::err_number_too_large(
        "99999999999999999999",
        "number `99999999999999999999` is too large at character 1"
    )]
    #[case::err_number_then_letters(
        "12ab",
        "unexpected `a` at character 3: a number is digits only; put other text in quotes"
    )]
    #[case::err_datetime_format(
        "message.now | datetime('%J')",
        "invalid `datetime` format `%J` at character 24: strftime formatting failed: found unrecognized specifier directive `J`"
    )]
    #[case::err_date_with_hours(
        "census.birth_date | date('%Y%m%d%H')",
        "invalid `date` format `%Y%m%d%H` at character 26: strftime formatting failed: %H failed: requires time to format (`date` has no time: use `datetime` for hours and offsets)"
    )]
    #[case::err_replace_empty(
        "census.unit | replace('', 'x')",
        "wrong arguments for `replace` at character 15: it takes two texts in quotes, the first not empty, e.g. `replace('/', '-')`"
    )]
    fn err_parse(#[case] src: &str, #[case] expected: &str) {
        assert_eq!(names_parse(src).unwrap_err(), expected);
    }

    #[test]
    fn err_nesting_is_bounded() {
        let deep = format!("{}census.ipp{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(
            names_parse(&deep).unwrap_err(),
            "expression nests too deeply at character 33: use at most 32 levels of parentheses and `not`"
        );
        let nots = format!("{}census.ipp", "not ".repeat(100));
        assert!(names_parse(&nots).is_err());
    }

    #[rstest]
    #[case::ok_list("prescription.lines", Ok("prescription.lines"))]
    #[case::ok_nested("line.dosages", Ok("line.dosages"))]
    #[case::err_expression(
        "prescription.lines | first",
        Err(
            "`prescription.lines | first` is not a path: `for_each` takes the path of a list, such as `prescription.lines`"
        )
    )]
    #[case::err_spread(
        "prescription.lines[].dosages",
        Err(
            "`prescription.lines[].dosages` has `[]`: `for_each` takes the path of the list itself, such as `prescription.lines`"
        )
    )]
    #[case::err_index(
        "line_index",
        Err(
            "`line_index` is a number, not a list: `for_each` needs a path to a list such as `prescription.lines`"
        )
    )]
    fn for_each_paths(#[case] src: &str, #[case] expected: Result<&str, &str>) {
        let vars = ["line".to_string()];
        let names = Names {
            inputs: Inputs::Push,
            vars: &vars,
            maps: &[],
        };
        let got = parse_path(src, &names);
        match expected {
            Ok(text) => assert_eq!(&*got.unwrap().text, text),
            Err(message) => assert_eq!(got.unwrap_err().0, message),
        }
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(s in "\\PC{0,64}") {
                let vars = ["line".to_string()];
                let maps = ["sex".to_string()];
                let names = Names { inputs: Inputs::Push, vars: &vars, maps: &maps };
                let _ = parse(&s, &names);
                let _ = parse_path(&s, &names);
            }

            #[test]
            fn never_panics_on_expression_like_text(
                s in "[a-z_.\\[\\]0-9|~=!()', %]{0,64}"
            ) {
                let vars = ["line".to_string()];
                let maps = ["sex".to_string()];
                let names = Names { inputs: Inputs::Push, vars: &vars, maps: &maps };
                let _ = parse(&s, &names);
            }
        }
    }
}
