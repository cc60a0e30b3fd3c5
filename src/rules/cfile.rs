//! A light C reader: enough structure for a rule to know where a line lives.
//!
//! A grep cannot tell `flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;` under the upstream
//! `if (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)` from the same statement under a
//! PCI device-id test. This module splits a C file into statements (joined across
//! lines, comments and string contents blanked) and gives each one its context: the
//! enclosing function, the chain of `if`/`else`/loop/`switch` conditions above it
//! (with `else` branches negated, brace-less bodies ending after one statement), the
//! `case` labels of its switch arm, and the preprocessor conditions around it
//! (`#if 0` regions are dead). It is not a compiler: it only has to be right about
//! code that compiles, and degrade quietly on code that does not.

use std::sync::Arc;

/// What kind of thing a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An expression statement or declaration, ended by `;`.
    Statement,
    /// The header of an `if`/`for`/`while`/`switch` (or a loop macro), or a function.
    Control,
    /// `case X:`, `default:` or a goto label.
    Label,
    /// A preprocessor directive (continuation lines joined).
    Preproc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CondKind {
    If,
    Loop,
    Switch,
    Preproc,
}

/// One condition a statement depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cond {
    pub kind: CondKind,
    /// The condition text (whitespace collapsed, comments removed).
    pub text: String,
    /// True in an `else` branch (the statement runs when `text` is false).
    pub negated: bool,
    pub line: usize,
}

/// Where a statement lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ctx {
    /// The enclosing function's name.
    pub function: Option<String>,
    /// Conditions from outermost to innermost.
    pub conds: Vec<Cond>,
    /// `case` labels of the innermost switch arm (whitespace removed), e.g.
    /// `IP_VERSION(10,1,10)`.
    pub labels: Vec<String>,
    /// Inside an `#if 0` (or the `#else` of an `#if 1`).
    pub dead: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub kind: Kind,
    /// Code text joined across lines, whitespace runs collapsed to one space.
    pub text: String,
    /// `(offset in text, line)`: text from this offset on comes from this line.
    breaks: Vec<(usize, usize)>,
    pub line: usize,
    pub last_line: usize,
    pub ctx: Arc<Ctx>,
}

impl Stmt {
    /// The 1-based line that the text at `offset` came from.
    pub(crate) fn line_at(&self, offset: usize) -> usize {
        let i = self.breaks.partition_point(|(o, _)| *o <= offset);
        if i == 0 {
            self.line
        } else {
            self.breaks[i - 1].1
        }
    }
}

/// Three views of the same bytes, each the same length as the file: the raw text,
/// the code (comments and string contents blanked) and the prose (only comments and
/// string contents kept).
#[derive(Debug, Clone)]
pub(crate) struct Views {
    pub raw: String,
    pub code: String,
    pub prose: String,
}

impl Views {
    pub(crate) fn of_c(raw: &str) -> Views {
        let b = raw.as_bytes();
        let mut code = b.to_vec();
        let mut prose = vec![b' '; b.len()];
        let mut i = 0;
        let blank = |v: &mut Vec<u8>, p: &mut Vec<u8>, i: usize| {
            if b[i] != b'\n' {
                v[i] = b' ';
                p[i] = b[i];
            } else {
                p[i] = b'\n';
            }
        };
        while i < b.len() {
            let c = b[i];
            if c == b'\n' {
                prose[i] = b'\n';
                i += 1;
            } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
                let end = find(b, i + 2, b"*/").map(|e| e + 2).unwrap_or(b.len());
                for j in i..end {
                    blank(&mut code, &mut prose, j);
                }
                i = end;
            } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
                let mut j = i;
                while j < b.len() && b[j] != b'\n' {
                    blank(&mut code, &mut prose, j);
                    j += 1;
                }
                i = j;
            } else if c == b'"' || c == b'\'' {
                // A literal ends at its closing quote or, if malformed, the line end.
                let mut j = i + 1;
                while j < b.len() && b[j] != c && b[j] != b'\n' {
                    if b[j] == b'\\' && j + 1 < b.len() && b[j + 1] != b'\n' {
                        j += 1;
                    }
                    j += 1;
                }
                if c == b'\'' && (j >= b.len() || b[j] != c) {
                    // An apostrophe in a stray place (e.g. `#error don't`): not a literal.
                    i += 1;
                    continue;
                }
                for k in i + 1..j.min(b.len()) {
                    blank(&mut code, &mut prose, k);
                }
                i = (j + 1).min(b.len());
            } else {
                i += 1;
            }
        }
        // Blanking only replaced ASCII-or-not bytes by spaces within runs that began
        // at ASCII delimiters; a multi-byte character is always blanked whole.
        Views {
            raw: raw.to_string(),
            code: String::from_utf8(code).unwrap_or_else(|e| lossy(e.into_bytes())),
            prose: String::from_utf8(prose).unwrap_or_else(|e| lossy(e.into_bytes())),
        }
    }

    /// Views of a file that is not C: everything is code, nothing is prose.
    pub(crate) fn of_plain(raw: &str) -> Views {
        Views {
            raw: raw.to_string(),
            code: raw.to_string(),
            prose: raw.to_string(),
        }
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from >= hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// A parsed C file.
#[derive(Debug, Clone)]
pub(crate) struct CFile {
    pub views: Views,
    pub stmts: Vec<Stmt>,
    /// For each line (index 0 = line 1): the statement that covers it, if any.
    line_stmt: Vec<Option<usize>>,
}

impl CFile {
    /// A C file from its text (the unit tests' way in; the engine builds views once).
    #[cfg(test)]
    pub(crate) fn parse(raw: &str) -> CFile {
        CFile::from_views(Views::of_c(raw))
    }

    /// Parses the statements of views made by [`Views::of_c`]. Code nested deeper
    /// than [`MAX_DEPTH`] (no real source is; a hostile file can nest a million
    /// `if`s on one line, and every statement's context would copy the whole chain)
    /// is read as plain lines instead.
    pub(crate) fn from_views(views: Views) -> CFile {
        let Some(stmts) = Parser::new(views.code.as_bytes()).run() else {
            return CFile::plain_from_views(views);
        };
        let lines = views.raw.lines().count().max(1);
        let mut line_stmt = vec![None; lines + 1];
        for (i, s) in stmts.iter().enumerate() {
            for l in s.line..=s.last_line.min(lines) {
                if l >= 1 && line_stmt[l - 1].is_none() {
                    line_stmt[l - 1] = Some(i);
                }
            }
        }
        CFile {
            views,
            stmts,
            line_stmt,
        }
    }

    /// A file that is not C, from views made by [`Views::of_plain`].
    pub(crate) fn plain_from_views(views: Views) -> CFile {
        let raw = views.raw.clone();
        let raw = raw.as_str();
        let ctx = Arc::new(Ctx::default());
        let mut stmts = Vec::new();
        let mut line_stmt = Vec::new();
        for (i, l) in raw.lines().enumerate() {
            let t = l.trim();
            if t.is_empty() {
                line_stmt.push(None);
                continue;
            }
            line_stmt.push(Some(stmts.len()));
            stmts.push(Stmt {
                kind: Kind::Statement,
                text: t.split_whitespace().collect::<Vec<_>>().join(" "),
                breaks: vec![(0, i + 1)],
                line: i + 1,
                last_line: i + 1,
                ctx: ctx.clone(),
            });
        }
        line_stmt.push(None);
        CFile {
            views,
            stmts,
            line_stmt,
        }
    }

    /// The first statement touching a line.
    pub(crate) fn stmt_of_line(&self, line: usize) -> Option<&Stmt> {
        let i = (*self.line_stmt.get(line.checked_sub(1)?)?)?;
        Some(&self.stmts[i])
    }

    /// The context of a line (that of the first statement touching it).
    pub(crate) fn ctx_of_line(&self, line: usize) -> Option<&Arc<Ctx>> {
        self.stmt_of_line(line).map(|s| &s.ctx)
    }

    /// The name of every function defined in the file, with the line of its header.
    pub(crate) fn functions(&self) -> impl Iterator<Item = (&str, &Stmt)> {
        self.stmts.iter().filter_map(|s| {
            if s.kind != Kind::Control || s.ctx.function.is_some() {
                return None;
            }
            function_name(&s.text).map(|n| (n, s))
        })
    }
}

#[derive(Debug, Clone)]
enum FrameKind {
    Function(String),
    Block,
    If(String),
    Else(String),
    Loop(String),
    Switch {
        expr: String,
        labels: Vec<String>,
        arm_has_stmt: bool,
    },
    Do,
}

#[derive(Debug, Clone)]
struct Frame {
    kind: FrameKind,
    braced: bool,
    line: usize,
}

impl Frame {
    fn is_control(&self) -> bool {
        !matches!(self.kind, FrameKind::Function(_) | FrameKind::Block)
    }
}

#[derive(Debug, Clone)]
struct PpEntry {
    snapshot: (Vec<Frame>, i32),
    first_end: Option<(Vec<Frame>, i32)>,
    text: String,
    in_else: bool,
    first_dead: bool,
    dead: bool,
}

#[derive(Debug, Default)]
struct Cur {
    text: String,
    breaks: Vec<(usize, usize)>,
    first_line: usize,
    last_line: usize,
    depth: i32,
    space: bool,
}

impl Cur {
    fn push(&mut self, c: char, line: usize) {
        if self.space && !self.text.is_empty() {
            self.text.push(' ');
        }
        self.space = false;
        if self.breaks.last().is_none_or(|(_, l)| *l != line) {
            self.breaks.push((self.text.len(), line));
        }
        if self.text.is_empty() {
            self.first_line = line;
        }
        self.last_line = line;
        self.text.push(c);
    }
}

/// The deepest nesting of control statements and of `#if`s the reader follows.
pub(crate) const MAX_DEPTH: usize = 256;

struct Parser<'a> {
    /// Nesting went past [`MAX_DEPTH`]: the parse is abandoned.
    too_deep: bool,
    b: &'a [u8],
    pos: usize,
    line: usize,
    at_line_start: bool,
    frames: Vec<Frame>,
    pp: Vec<PpEntry>,
    cur: Option<Cur>,
    last_popped: Vec<Frame>,
    expect_do_while: bool,
    out: Vec<Stmt>,
    ctx_cache: Option<Arc<Ctx>>,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl<'a> Parser<'a> {
    fn new(b: &'a [u8]) -> Parser<'a> {
        Parser {
            too_deep: false,
            b,
            pos: 0,
            line: 1,
            at_line_start: true,
            frames: Vec::new(),
            pp: Vec::new(),
            cur: None,
            last_popped: Vec::new(),
            expect_do_while: false,
            out: Vec::new(),
            ctx_cache: None,
        }
    }

    fn peek_word(&self, at: usize) -> &'a str {
        let mut e = at;
        while e < self.b.len() && is_ident(self.b[e]) {
            e += 1;
        }
        std::str::from_utf8(&self.b[at..e]).unwrap_or("")
    }

    /// Position of the next non-whitespace byte at or after `at`, crossing lines
    /// but not preprocessor lines.
    fn next_nonspace(&self, mut at: usize) -> Option<usize> {
        while at < self.b.len() {
            if !self.b[at].is_ascii_whitespace() {
                return Some(at);
            }
            at += 1;
        }
        None
    }

    fn advance_to(&mut self, to: usize) {
        while self.pos < to {
            if self.b[self.pos] == b'\n' {
                self.line += 1;
            }
            self.pos += 1;
        }
    }

    fn invalidate(&mut self) {
        self.ctx_cache = None;
    }

    fn ctx(&mut self) -> Arc<Ctx> {
        if let Some(c) = &self.ctx_cache {
            return c.clone();
        }
        let mut ctx = Ctx::default();
        for p in &self.pp {
            ctx.conds.push(Cond {
                kind: CondKind::Preproc,
                text: p.text.clone(),
                negated: p.in_else,
                line: 0,
            });
            ctx.dead |= p.dead;
        }
        for f in &self.frames {
            match &f.kind {
                FrameKind::Function(n) => {
                    if ctx.function.is_none() {
                        ctx.function = Some(n.clone());
                    }
                }
                FrameKind::Block | FrameKind::Do => {}
                FrameKind::If(t) => ctx.conds.push(Cond {
                    kind: CondKind::If,
                    text: t.clone(),
                    negated: false,
                    line: f.line,
                }),
                FrameKind::Else(t) => ctx.conds.push(Cond {
                    kind: CondKind::If,
                    text: t.clone(),
                    negated: true,
                    line: f.line,
                }),
                FrameKind::Loop(t) => ctx.conds.push(Cond {
                    kind: CondKind::Loop,
                    text: t.clone(),
                    negated: false,
                    line: f.line,
                }),
                FrameKind::Switch { expr, labels, .. } => {
                    ctx.conds.push(Cond {
                        kind: CondKind::Switch,
                        text: expr.clone(),
                        negated: false,
                        line: f.line,
                    });
                    ctx.labels = labels.clone();
                }
            }
        }
        let c = Arc::new(ctx);
        self.ctx_cache = Some(c.clone());
        c
    }

    fn emit(&mut self, kind: Kind, cur: Cur) {
        if cur.text.is_empty() {
            return;
        }
        let ctx = self.ctx();
        self.out.push(Stmt {
            kind,
            text: cur.text,
            breaks: cur.breaks,
            line: cur.first_line,
            last_line: cur.last_line,
            ctx,
        });
        if kind != Kind::Label && kind != Kind::Preproc {
            if let Some(f) = self
                .frames
                .iter_mut()
                .rev()
                .find(|f| matches!(f.kind, FrameKind::Switch { .. }))
            {
                if let FrameKind::Switch { arm_has_stmt, .. } = &mut f.kind {
                    *arm_has_stmt = true;
                }
            }
        }
    }

    fn push_frame(&mut self, kind: FrameKind, braced: bool, line: usize) {
        self.too_deep |= self.frames.len() >= MAX_DEPTH;
        self.frames.push(Frame { kind, braced, line });
        self.invalidate();
    }

    /// A statement (or a braced control body) completed: brace-less control frames
    /// waiting for it end too.
    fn complete(&mut self, mut popped: Vec<Frame>) {
        while let Some(top) = self.frames.last() {
            if top.braced || !top.is_control() {
                break;
            }
            let f = self.frames.pop().unwrap();
            let is_do = matches!(f.kind, FrameKind::Do);
            popped.push(f);
            if is_do {
                self.expect_do_while = true;
                break;
            }
        }
        self.invalidate();
        self.last_popped = popped;
    }

    fn close_brace(&mut self) {
        // Drop brace-less frames left open by malformed code, then the braced one.
        while let Some(top) = self.frames.last() {
            if top.braced || !top.is_control() {
                break;
            }
            self.frames.pop();
        }
        let Some(f) = self.frames.pop() else {
            self.invalidate();
            return;
        };
        self.invalidate();
        if f.is_control() {
            let is_do = matches!(f.kind, FrameKind::Do);
            if is_do {
                self.expect_do_while = true;
                self.last_popped.clear();
            } else {
                self.complete(vec![f]);
            }
        } else {
            self.last_popped.clear();
        }
    }

    /// Reads a parenthesised group starting at `self.pos` (which is `(`), returning
    /// its inner text collapsed. Preprocessor lines inside are skipped.
    fn read_parens(&mut self, cur: &mut Cur) -> String {
        let start_len = cur.text.len();
        let mut depth = 0i32;
        while self.pos < self.b.len() {
            let c = self.b[self.pos];
            if c == b'\n' {
                self.line += 1;
                self.pos += 1;
                cur.space = true;
                self.at_line_start = true;
                continue;
            }
            if c.is_ascii_whitespace() {
                cur.space = true;
                self.pos += 1;
                continue;
            }
            if self.at_line_start && c == b'#' {
                self.preproc();
                continue;
            }
            self.at_line_start = false;
            cur.push(c as char, self.line);
            self.pos += 1;
            match c {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth <= 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = cur.text[start_len..].trim();
        inner
            .strip_prefix('(')
            .unwrap_or(inner)
            .strip_suffix(')')
            .unwrap_or(inner)
            .trim()
            .to_string()
    }

    /// After a control header: a `{` makes the frame braced, a `;` is an empty body.
    fn after_header(&mut self) {
        match self.next_nonspace(self.pos) {
            Some(p) if self.b[p] == b'{' && !self.line_has_hash_before(p) => {
                self.advance_to(p + 1);
                if let Some(f) = self.frames.last_mut() {
                    f.braced = true;
                }
                self.at_line_start = false;
            }
            Some(p) if self.b[p] == b';' => {
                self.advance_to(p + 1);
                self.at_line_start = false;
                self.complete(Vec::new());
            }
            _ => {}
        }
    }

    /// Whether a preprocessor line starts between the current position and `p`.
    fn line_has_hash_before(&self, p: usize) -> bool {
        let mut at_start = self.at_line_start;
        for &c in &self.b[self.pos..p] {
            if c == b'\n' {
                at_start = true;
            } else if c == b'#' && at_start {
                return true;
            } else if !c.is_ascii_whitespace() {
                at_start = false;
            }
        }
        false
    }

    fn control(&mut self, word: &str) {
        let line = self.line;
        self.last_popped.clear();
        self.expect_do_while = false;
        let mut cur = Cur::default();
        for ch in word.chars() {
            cur.push(ch, line);
        }
        self.pos += word.len();
        cur.space = true;
        if let Some(p) = self.next_nonspace(self.pos) {
            self.advance_to(p);
        }
        let cond = self.read_parens(&mut cur);
        self.emit(Kind::Control, cur);
        let kind = match word {
            "if" => FrameKind::If(cond),
            "switch" => FrameKind::Switch {
                expr: cond,
                labels: Vec::new(),
                arm_has_stmt: false,
            },
            _ => FrameKind::Loop(cond),
        };
        self.push_frame(kind, false, line);
        self.after_header();
    }

    fn else_branch(&mut self) {
        let line = self.line;
        self.pos += 4;
        let popped = std::mem::take(&mut self.last_popped);
        let cond = match popped
            .iter()
            .position(|f| matches!(f.kind, FrameKind::If(_)))
        {
            Some(i) => {
                // Frames popped after the `if` enclosed it: they are still open.
                for f in popped[i + 1..].iter().rev() {
                    self.frames.push(f.clone());
                }
                match &popped[i].kind {
                    FrameKind::If(c) => c.clone(),
                    _ => unreachable!(),
                }
            }
            None => String::new(),
        };
        self.push_frame(FrameKind::Else(cond), false, line);
        self.after_header();
    }

    fn label(&mut self, end: usize) {
        let mut cur = Cur::default();
        while self.pos < end {
            let c = self.b[self.pos];
            if c == b'\n' {
                self.line += 1;
                cur.space = true;
            } else if c.is_ascii_whitespace() {
                cur.space = true;
            } else {
                cur.push(c as char, self.line);
            }
            self.pos += 1;
        }
        let text = cur.text.clone();
        let is_case = text.starts_with("case") || text.starts_with("default");
        self.emit(Kind::Label, cur);
        if !is_case {
            return;
        }
        let norm: String = text
            .trim_start_matches("case")
            .trim_end_matches(':')
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Some(f) = self
            .frames
            .iter_mut()
            .rev()
            .find(|f| matches!(f.kind, FrameKind::Switch { .. }))
        {
            if let FrameKind::Switch {
                labels,
                arm_has_stmt,
                ..
            } = &mut f.kind
            {
                if *arm_has_stmt {
                    labels.clear();
                    *arm_has_stmt = false;
                }
                labels.push(norm);
            }
        }
        self.invalidate();
    }

    /// End of a `case ...:` label (the `:` at depth 0), if the text at `at` is one.
    fn label_end(&self, at: usize, word: &str) -> Option<usize> {
        let mut i = at + word.len();
        if word == "case" || word == "default" {
            let mut depth = 0;
            while i < self.b.len() {
                match self.b[i] {
                    b'(' | b'[' => depth += 1,
                    b')' | b']' => depth -= 1,
                    b';' | b'{' | b'}' => return None,
                    b':' if depth == 0 => {
                        if self.b.get(i + 1) == Some(&b':') {
                            return None;
                        }
                        return Some(i + 1);
                    }
                    _ => {}
                }
                i += 1;
            }
            return None;
        }
        // A goto label: `out:` inside a function body.
        if !self
            .frames
            .iter()
            .any(|f| matches!(f.kind, FrameKind::Function(_)))
        {
            return None;
        }
        while i < self.b.len() && (self.b[i] == b' ' || self.b[i] == b'\t') {
            i += 1;
        }
        if self.b.get(i) == Some(&b':') && self.b.get(i + 1) != Some(&b':') {
            Some(i + 1)
        } else {
            None
        }
    }

    fn preproc(&mut self) {
        let line = self.line;
        let mut cur = Cur::default();
        while self.pos < self.b.len() {
            let c = self.b[self.pos];
            if c == b'\\' && self.b.get(self.pos + 1) == Some(&b'\n') {
                self.pos += 2;
                self.line += 1;
                cur.space = true;
                continue;
            }
            if c == b'\n' {
                break;
            }
            if c.is_ascii_whitespace() {
                cur.space = true;
            } else {
                cur.push(c as char, self.line);
            }
            self.pos += 1;
        }
        let text = cur.text.clone();
        let directive = text.trim_start_matches('#').trim_start();
        let word: String = directive
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let rest = directive[word.len()..].trim().to_string();
        let depth = self.cur.as_ref().map(|c| c.depth).unwrap_or(0);
        if cur.first_line == 0 {
            cur.first_line = line;
            cur.last_line = line;
        }
        self.emit(Kind::Preproc, cur);
        match word.as_str() {
            "if" | "ifdef" | "ifndef" => {
                let dead = word == "if" && rest == "0";
                self.too_deep |= self.pp.len() >= MAX_DEPTH;
                self.pp.push(PpEntry {
                    snapshot: (self.frames.clone(), depth),
                    first_end: None,
                    text: format!("{word} {rest}"),
                    in_else: false,
                    first_dead: dead,
                    dead,
                });
            }
            "elif" | "else" => {
                if let Some(e) = self.pp.last_mut() {
                    if e.first_end.is_none() {
                        e.first_end = Some((self.frames.clone(), depth));
                    }
                    self.frames = e.snapshot.0.clone();
                    if let Some(c) = self.cur.as_mut() {
                        c.depth = e.snapshot.1;
                    }
                    e.in_else = true;
                    e.dead = if word == "elif" {
                        rest == "0"
                    } else {
                        e.text == "if 1"
                    };
                }
            }
            "endif" => {
                if let Some(e) = self.pp.pop() {
                    if let Some(first) = e.first_end {
                        if !e.first_dead {
                            self.frames = first.0;
                            if let Some(c) = self.cur.as_mut() {
                                c.depth = first.1;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        self.invalidate();
    }

    /// `{` with a statement in progress at depth 0.
    fn brace_in_statement(&mut self) {
        let cur = self.cur.as_mut().unwrap();
        let text = cur.text.trim_end().to_string();
        if has_assignment(&text) {
            // An initializer: its braces nest like parentheses until the `;`.
            cur.push('{', self.line);
            cur.depth += 1;
            self.pos += 1;
            return;
        }
        let line = cur.first_line;
        let in_function = self
            .frames
            .iter()
            .any(|f| matches!(f.kind, FrameKind::Function(_)));
        let cur = self.cur.take().unwrap();
        self.pos += 1;
        if in_function && text.ends_with(')') {
            // A loop macro such as list_for_each_entry(...) { ... }.
            self.emit(Kind::Control, cur);
            self.push_frame(FrameKind::Loop(text), true, line);
        } else if !in_function && text.ends_with(')') && !starts_type_body(&text) {
            let name = function_name(&text).unwrap_or("").to_string();
            self.emit(Kind::Control, cur);
            self.push_frame(FrameKind::Function(name), true, line);
        } else {
            // struct/enum/union bodies and other blocks: the text is a prefix.
            self.push_frame(FrameKind::Block, true, line);
        }
        self.last_popped.clear();
    }

    fn end_statement(&mut self) {
        if let Some(cur) = self.cur.take() {
            self.emit(Kind::Statement, cur);
        }
        let do_while = std::mem::take(&mut self.expect_do_while);
        self.complete(Vec::new());
        if do_while {
            // `do ... while (x);` ended the do; whatever waited for it ends too.
            self.expect_do_while = false;
        }
    }

    fn run(mut self) -> Option<Vec<Stmt>> {
        while self.pos < self.b.len() {
            if self.too_deep {
                return None;
            }
            let c = self.b[self.pos];
            if c == b'\n' {
                self.line += 1;
                self.pos += 1;
                self.at_line_start = true;
                if let Some(cur) = self.cur.as_mut() {
                    cur.space = true;
                }
                continue;
            }
            if c.is_ascii_whitespace() {
                self.pos += 1;
                if let Some(cur) = self.cur.as_mut() {
                    cur.space = true;
                }
                continue;
            }
            if self.at_line_start && c == b'#' {
                self.preproc();
                continue;
            }
            self.at_line_start = false;
            if self.cur.is_none() {
                if is_ident_start(c) {
                    let word = self.peek_word(self.pos);
                    let next = self.next_nonspace(self.pos + word.len());
                    let next_c = next.map(|p| self.b[p]);
                    match word {
                        "if" | "switch" | "for" if next_c == Some(b'(') => {
                            self.control(word);
                            continue;
                        }
                        "while" if next_c == Some(b'(') && !self.expect_do_while => {
                            self.control(word);
                            continue;
                        }
                        "else" => {
                            self.else_branch();
                            continue;
                        }
                        "do" if matches!(next_c, Some(b'{'))
                            || next_c.is_some_and(is_ident_start) =>
                        {
                            let line = self.line;
                            self.pos += 2;
                            self.last_popped.clear();
                            self.push_frame(FrameKind::Do, false, line);
                            self.after_header();
                            continue;
                        }
                        _ => {}
                    }
                    if let Some(end) = self.label_end(self.pos, word) {
                        self.last_popped.clear();
                        self.label(end);
                        continue;
                    }
                }
                match c {
                    b'{' => {
                        let line = self.line;
                        self.pos += 1;
                        self.last_popped.clear();
                        self.push_frame(FrameKind::Block, true, line);
                        continue;
                    }
                    b'}' => {
                        self.pos += 1;
                        self.close_brace();
                        continue;
                    }
                    b';' => {
                        self.pos += 1;
                        self.end_statement();
                        continue;
                    }
                    _ => {
                        if !(c == b'w' && self.expect_do_while) {
                            self.expect_do_while = false;
                        }
                        self.last_popped.clear();
                        self.cur = Some(Cur::default());
                    }
                }
            }
            let line = self.line;
            let depth = self.cur.as_ref().map(|c| c.depth).unwrap_or(0);
            match c {
                b'(' | b'[' => {
                    let cur = self.cur.as_mut().unwrap();
                    cur.depth += 1;
                    cur.push(c as char, line);
                    self.pos += 1;
                }
                b')' | b']' => {
                    let cur = self.cur.as_mut().unwrap();
                    cur.depth = (cur.depth - 1).max(0);
                    cur.push(c as char, line);
                    self.pos += 1;
                }
                b'{' if depth == 0 => self.brace_in_statement(),
                b'{' => {
                    let cur = self.cur.as_mut().unwrap();
                    cur.depth += 1;
                    cur.push('{', line);
                    self.pos += 1;
                }
                b'}' if depth == 0 => {
                    // A statement cut short by a closing brace (e.g. enum bodies).
                    if let Some(cur) = self.cur.take() {
                        self.emit(Kind::Statement, cur);
                    }
                    self.pos += 1;
                    self.close_brace();
                }
                b'}' => {
                    let cur = self.cur.as_mut().unwrap();
                    cur.depth -= 1;
                    cur.push('}', line);
                    self.pos += 1;
                }
                b';' if depth == 0 => {
                    self.pos += 1;
                    let cur = self.cur.as_mut().unwrap();
                    cur.push(';', line);
                    self.end_statement();
                }
                _ => {
                    let cur = self.cur.as_mut().unwrap();
                    // Copy a whole UTF-8 character (only ASCII is structural).
                    let len = utf8_len(c);
                    let end = (self.pos + len).min(self.b.len());
                    if let Ok(s) = std::str::from_utf8(&self.b[self.pos..end]) {
                        for ch in s.chars() {
                            cur.push(ch, line);
                        }
                    }
                    self.pos = end;
                }
            }
        }
        if let Some(cur) = self.cur.take() {
            self.emit(Kind::Statement, cur);
        }
        (!self.too_deep).then_some(self.out)
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Whether the text before a `{` is an initializer (`x = {`, `y[] = {`).
fn has_assignment(text: &str) -> bool {
    let b = text.as_bytes();
    let mut depth = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'=' if depth == 0 => {
                let prev = if i > 0 { b[i - 1] } else { b' ' };
                let next = b.get(i + 1).copied().unwrap_or(b' ');
                if !matches!(prev, b'=' | b'!' | b'<' | b'>') && next != b'=' {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

fn starts_type_body(text: &str) -> bool {
    let t = text.trim_start_matches("typedef ").trim_start();
    (t.starts_with("struct ") || t.starts_with("union ") || t.starts_with("enum "))
        && !t.contains('(')
}

/// The name of the function a header defines: the identifier before its last
/// top-level parenthesised group that is not an attribute.
pub(crate) fn function_name(header: &str) -> Option<&str> {
    let b = header.as_bytes();
    let mut depth = 0;
    let mut best = None;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'(' => {
                if depth == 0 {
                    let mut e = i;
                    while e > 0 && b[e - 1] == b' ' {
                        e -= 1;
                    }
                    let mut s = e;
                    while s > 0 && is_ident(b[s - 1]) {
                        s -= 1;
                    }
                    if s < e && !header[s..e].starts_with("__") && is_ident_start(b[s]) {
                        best = Some(&header[s..e]);
                    }
                }
                depth += 1;
            }
            b')' => depth -= 1,
            _ => {}
        }
    }
    best
}

/// Splits a condition on top-level `||` (parentheses respected).
pub(crate) fn disjuncts(cond: &str) -> Vec<&str> {
    split_top_level(cond, b'|')
}

/// Strips redundant outer parentheses: `((a || b))` → `a || b`.
pub(crate) fn strip_parens(mut s: &str) -> &str {
    loop {
        let t = s.trim();
        if !(t.starts_with('(') && t.ends_with(')')) {
            return t;
        }
        // Only if the first `(` closes at the very end.
        let b = t.as_bytes();
        let mut depth = 0;
        for (i, &c) in b.iter().enumerate() {
            match c {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 && i != b.len() - 1 {
                        return t;
                    }
                }
                _ => {}
            }
        }
        s = &t[1..t.len() - 1];
    }
}

/// Whether a condition is constant true as written (`1`, `true`, `!0`, `1 || x`).
pub(crate) fn always_true(cond: &str) -> bool {
    disjuncts(strip_parens(cond)).iter().any(|d| {
        let d = strip_parens(d);
        matches!(d, "1" | "true" | "!0" | "!false" | "1U" | "1u")
            || d.chars().all(|c| c.is_ascii_digit()) && d != "0" && !d.is_empty()
    })
}

/// Whether a condition is constant false as written (`0`, `false`, `0 && x`).
pub(crate) fn always_false(cond: &str) -> bool {
    let c = strip_parens(cond);
    if disjuncts(c).len() > 1 {
        return disjuncts(c).iter().all(|d| always_false(d));
    }
    conjuncts(c).iter().any(|d| {
        let d = strip_parens(d);
        matches!(d, "0" | "false" | "!1" | "!true")
    })
}

/// Splits a condition on top-level `&&`.
pub(crate) fn conjuncts(cond: &str) -> Vec<&str> {
    split_top_level(cond, b'&')
}

/// Splits a condition on a doubled operator (`||`, `&&`) outside parentheses and brackets.
fn split_top_level(cond: &str, op: u8) -> Vec<&str> {
    let b = cond.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            c if c == op && depth == 0 && b.get(i + 1) == Some(&op) => {
                out.push(cond[start..i].trim());
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(cond[start..].trim());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_past_the_limit_is_read_as_plain_lines() {
        let deep = format!(
            "void g(void) {{ {}flags |= 1; }}\n",
            "if (x) ".repeat(MAX_DEPTH + 1)
        );
        let f = CFile::parse(&deep);
        assert_eq!(f.stmts.len(), 1);
        assert!(f.stmts[0].ctx.conds.is_empty());
        let pp = format!("{}int a;\n", "#if X\n".repeat(MAX_DEPTH + 1));
        let f = CFile::parse(&pp);
        assert_eq!(f.stmts.len(), MAX_DEPTH + 2);
        assert!(f.stmts.iter().all(|s| s.ctx.conds.is_empty()));
        // Just under the limit, the structure is kept.
        let ok = format!(
            "void g(void) {{ {}flags |= 1; }}\n",
            "if (x) ".repeat(MAX_DEPTH - 2)
        );
        let f = CFile::parse(&ok);
        let last = f.stmts.iter().find(|s| s.text == "flags |= 1;").unwrap();
        assert_eq!(last.ctx.conds.len(), MAX_DEPTH - 2);
    }

    fn stmt<'a>(f: &'a CFile, needle: &str) -> &'a Stmt {
        f.stmts
            .iter()
            .find(|s| s.text.contains(needle))
            .unwrap_or_else(|| panic!("no statement with {needle}: {:#?}", f.stmts))
    }

    const MEM: &str = r#"
static int kfd_parse_subtype_mem(struct crat_subtype_memory *mem,
				struct list_head *device_list)
{
	uint32_t flags = 0;

	list_for_each_entry(dev, device_list, list) {
		if (mem->proximity_domain == dev->proximity_domain) {
			if (dev->node_props.cpu_cores_count == 0) {
				if (mem->visibility_type == 0)
					heap_type = HSA_MEM_HEAP_TYPE_FB_PRIVATE;
				else
					heap_type = mem->visibility_type;
			} else
				heap_type = HSA_MEM_HEAP_TYPE_SYSTEM;

			if (mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE)
				flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE;
			if (mem->flags & CRAT_MEM_FLAGS_NON_VOLATILE)
				pr_debug("nv\n");
				flags |=
					HSA_MEM_FLAGS_NON_VOLATILE; /* misleading indent */
			size = ((uint64_t)mem->length_high << 32) +
						mem->length_low;
		}
	}
	return 0;
}
"#;

    #[test]
    fn guards_and_braceless_bodies() {
        let f = CFile::parse(MEM);
        let hp = stmt(&f, "flags |= HSA_MEM_FLAGS_HOT_PLUGGABLE");
        assert_eq!(hp.ctx.function.as_deref(), Some("kfd_parse_subtype_mem"));
        let last = hp.ctx.conds.last().unwrap();
        assert_eq!(last.text, "mem->flags & CRAT_MEM_FLAGS_HOT_PLUGGABLE");
        assert!(!last.negated);
        assert_eq!(hp.line, 18);
        // The statement after a brace-less if's body is not guarded by it.
        let nv = stmt(&f, "HSA_MEM_FLAGS_NON_VOLATILE");
        assert_eq!(nv.text, "flags |= HSA_MEM_FLAGS_NON_VOLATILE;");
        assert!(nv
            .ctx
            .conds
            .iter()
            .all(|c| !c.text.contains("NON_VOLATILE")));
        assert_eq!(nv.line, 21);
        assert_eq!(nv.line_at(nv.text.find("HSA").unwrap()), 22);
        // else branches are negated.
        let vis = stmt(&f, "heap_type = mem->visibility_type");
        let c = vis.ctx.conds.last().unwrap();
        assert!(c.negated && c.text == "mem->visibility_type == 0");
        let sys = stmt(&f, "HSA_MEM_HEAP_TYPE_SYSTEM");
        let c = sys.ctx.conds.last().unwrap();
        assert!(c.negated && c.text == "dev->node_props.cpu_cores_count == 0");
        // The loop macro is a condition too.
        assert_eq!(sys.ctx.conds[0].kind, CondKind::Loop);
        let size = stmt(&f, "length_low");
        assert_eq!(size.ctx.conds.len(), 2);
    }

    #[test]
    fn switch_arms_and_else_if() {
        let src = r#"
int probe(struct amdgpu_device *adev)
{
	switch (adev->asic_type) {
	case CHIP_KAVERI:
		v = 70000;
		break;
	default:
		switch (amdgpu_ip_version(adev, GC_HWIP, 0)) {
		case IP_VERSION(9, 1, 0):
		case IP_VERSION(9, 2, 2):
			v = 90002;
			break;
		/* Navi10 */
		case IP_VERSION(10, 1, 10):
			if (x)
				v = 1;
			else if (y)
				v = 2;
			else
				v = 3;
			break;
		}
		break;
	}
	return 0;
}
"#;
        let f = CFile::parse(src);
        assert_eq!(stmt(&f, "70000").ctx.labels, vec!["CHIP_KAVERI"]);
        assert_eq!(
            stmt(&f, "90002").ctx.labels,
            vec!["IP_VERSION(9,1,0)", "IP_VERSION(9,2,2)"]
        );
        let three = stmt(&f, "v = 3");
        assert_eq!(three.ctx.labels, vec!["IP_VERSION(10,1,10)"]);
        let negs: Vec<_> = three
            .ctx
            .conds
            .iter()
            .filter(|c| c.kind == CondKind::If)
            .map(|c| (c.text.as_str(), c.negated))
            .collect();
        assert_eq!(negs, vec![("x", true), ("y", true)]);
        let two = stmt(&f, "v = 2");
        let negs: Vec<_> = two
            .ctx
            .conds
            .iter()
            .filter(|c| c.kind == CondKind::If)
            .map(|c| (c.text.as_str(), c.negated))
            .collect();
        assert_eq!(negs, vec![("x", true), ("y", false)]);
        assert!(stmt(&f, "return 0").ctx.conds.is_empty());
    }

    #[test]
    fn preprocessor_branches_and_dead_code() {
        let src = r#"
#ifdef HAVE_NEW
static int foo(int a, int b)
#else
static int foo(int a)
#endif
{
#if 0
	flags |= 1;
#endif
	if (a) {
		x = 1;
	}
	return "}{";
}
static const int t[] = {
#ifdef CONFIG_X
	1, 2,
#endif
	3,
};
int after(void) { return 1; }
"#;
        let f = CFile::parse(src);
        let dead = stmt(&f, "flags |= 1");
        assert!(dead.ctx.dead);
        assert_eq!(dead.ctx.function.as_deref(), Some("foo"));
        assert!(!stmt(&f, "x = 1").ctx.dead);
        assert_eq!(stmt(&f, "return 1").ctx.function.as_deref(), Some("after"));
        assert!(stmt(&f, "t[] =").text.ends_with("3, };"));
    }

    #[test]
    fn malformed_input_degrades_quietly() {
        for src in [
            "}}}} int a; {{{{",
            "if (",
            "\"unterminated\n int x = 1;",
            "/* never closed",
            "#if 0\n#else\n#else\n#endif\n#endif\n}",
            "else else do do while",
            "case 1: default: x:",
            "int f() { switch (x) { case 0x731F: y = 1; } } }",
            "\u{feff}int \u{e9}t\u{e9} = 1; /* \u{2603} */",
        ] {
            let f = CFile::parse(src);
            for s in &f.stmts {
                assert!(s.line >= 1 && s.last_line >= s.line, "{src:?}: {s:?}");
            }
        }
        let f = CFile::parse("int f() { switch (x) { case 0x731F: y = 1; } }");
        assert_eq!(stmt(&f, "y = 1").ctx.labels, vec!["0x731F"]);
    }

    #[test]
    fn do_while_and_nested_braceless() {
        let src = "int f(void)\n{\n\tdo {\n\t\ta = 1;\n\t} while (a < 3);\n\tif (p)\n\t\tfor (i = 0; i < n; i++)\n\t\t\tb = i;\n\tc = 2;\n}\n";
        let f = CFile::parse(src);
        assert!(stmt(&f, "c = 2").ctx.conds.is_empty());
        assert_eq!(stmt(&f, "b = i").ctx.conds.len(), 2);
        assert!(stmt(&f, "while (a < 3)").ctx.conds.is_empty());
    }

    #[test]
    fn conditions() {
        assert!(always_true("1 || mem->flags & X"));
        assert!(always_true("(true)"));
        assert!(!always_true("a || b"));
        assert!(always_false("0 && a"));
        assert!(always_false("false"));
        assert!(!always_false("a && b"));
        assert_eq!(disjuncts("(a || b) || c"), vec!["(a || b)", "c"]);
        assert_eq!(function_name("static int foo(int a)"), Some("foo"));
        assert_eq!(
            function_name("struct kfd_dev *kgd2kfd_probe(struct amdgpu_device *adev, bool vf)"),
            Some("kgd2kfd_probe")
        );
    }
}
