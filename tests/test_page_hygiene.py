"""Every stage's page holds only what it uses (issue 21): a hygiene check of each testN/client.html.

The pages are lessons read with ``diff -u testA/client.html testB/client.html``,
so a page must carry nothing that its stage does not use: a helper, a CSS
rule or an option that only a later stage needs shows up, unexplained, in the
wrong diff. :func:`problems` scans one page (standard library only: the HTML
with :mod:`html.parser`, the inline script and stylesheet with small scanners
that know strings, comments and template literals) and says, one line each:

* a named function of the script (``function name(``, ``const name = (...) =>``,
  ``const name = function``) that is neither called nor handed over (as an
  event handler, a callback) within its scope, nor named in an ``on...=``
  attribute;
* an option that a function takes by name (``function f(url, { a, b })``)
  and that no call passes (``{ a: ... }``);
* a top-level ``const`` or ``let`` that nothing reads;
* an element that the script looks up by id (``$("x")``, ``getElementById``,
  ``querySelector("#x")``) and that the page does not have; an id used twice;
  a ``<label for>`` that names no element;
* a CSS rule that applies to nothing: a selector naming an id, class or
  element that is neither in the HTML nor made by the script (``createElement``,
  ``className =``, ``classList.add/toggle``); a selector made only of elements
  in the HTML that matches none of them as written (``.card > .row + #status``);
  an attribute value (``[data-state="open"]``) that the page never sets; a
  custom property or ``@keyframes`` that nothing uses, a ``var()`` never declared;
* anything loaded from the network: a ``src`` or ``href`` other than
  ``data:``, a ``url()`` other than ``data:``, an ``@import``.

It is a careful scan, not a browser: the unit tests at the end plant each kind
of dead code in a small page and show that it is reported, and that a clean
page passes. Beside it: one stylesheet for all stages (a rule reads the same
wherever it appears, in the same order), test1's script opens with the
browser's API, and each page speaks only its own server's protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ["test1", "test2", "test3", "test4", "test4b", "test5", "test6", "test7", "test8", "test9"]
NEIGHBOURS = list(zip(STAGES, STAGES[1:]))

IDENT = r"[A-Za-z_$][\w$]*"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "action", "data"}
# After one of these, a "/" starts a regular expression, not a division.
REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^")
REGEX_AFTER_WORDS = {"return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw"}


def page(stage: str) -> str:
    return (ROOT / stage / "client.html").read_text(encoding="utf-8")


# ------------------------------------------------------------------ the HTML

@dataclass(eq=False)
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None = None
    children: list[Element] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def previous_siblings(self) -> list[Element]:
        """The element siblings before this one, nearest first."""
        if self.parent is None:
            return []
        siblings = self.parent.children
        return siblings[:siblings.index(self)][::-1]

    def ancestors(self) -> list[Element]:
        found, node = [], self.parent
        while node is not None and node.tag != "#document":
            found.append(node)
            node = node.parent
        return found


class PageParser(HTMLParser):
    """The element tree of a page, its inline scripts and stylesheets, and its on... attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.document = Element("#document", {})
        self.stack = [self.document]
        self.elements: list[Element] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.handlers: list[str] = []          # the code of on...="..." attributes
        self.external: list[str] = []          # what would be loaded from somewhere else

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        element = Element(tag, values, self.stack[-1])
        self.stack[-1].children.append(element)
        self.elements.append(element)
        for name, value in values.items():
            if name.startswith("on"):
                self.handlers.append(value)
            if name in URL_ATTRIBUTES and not (value.startswith("data:") or value.startswith("#")):
                self.external.append(f"<{tag} {name}={value!r}>")
        if tag == "script":
            self.scripts.append("")
        elif tag == "style":
            self.styles.append("")
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        current = self.stack[-1].tag
        if current == "script":
            self.scripts[-1] += data
        elif current == "style":
            self.styles[-1] += data


# ---------------------------------------------------------------- the script

@dataclass
class Script:
    """A script with its comments, string contents and regular expressions blanked out.

    ``code`` has the length of the source: a position in one is the same in
    the other. Template literals keep the code of their ``${...}``.
    ``strings`` holds the text of every string literal and template part.
    """

    source: str
    code: str = ""
    strings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        out = list(self.source)
        end = self._code(0, out, in_template=False)
        assert end == len(self.source), "unbalanced template literal"
        self.code = "".join(out)

    def _blank(self, out: list[str], start: int, end: int) -> None:
        for i in range(start, end):
            if out[i] != "\n":
                out[i] = " "

    def _code(self, i: int, out: list[str], in_template: bool) -> int:
        """Scan code from ``i``; inside a template's ``${``, stop at its closing brace."""
        src, depth = self.source, 0
        while i < len(src):
            c = src[i]
            if src.startswith("//", i):
                end = src.find("\n", i)
                end = len(src) if end < 0 else end
                self._blank(out, i, end)
                i = end
            elif src.startswith("/*", i):
                end = src.index("*/", i) + 2
                self._blank(out, i, end)
                i = end
            elif c in "\"'":
                end = i + 1
                while src[end] != c:
                    end += 2 if src[end] == "\\" else 1
                self.strings.append(src[i + 1:end])
                self._blank(out, i + 1, end)
                i = end + 1
            elif c == "`":
                i = self._template(i + 1, out)
            elif c == "/" and self._starts_regex(out, i):
                end, in_class = i + 1, False
                while in_class or src[end] != "/":
                    in_class = (in_class or src[end] == "[") and src[end] != "]"
                    end += 2 if src[end] == "\\" else 1
                end += 1
                while end < len(src) and src[end].isalpha():
                    end += 1
                self._blank(out, i, end)
                i = end
            elif c == "{":
                depth += 1
                i += 1
            elif c == "}":
                if in_template and depth == 0:
                    return i
                depth -= 1
                i += 1
            else:
                i += 1
        return i

    def _template(self, i: int, out: list[str]) -> int:
        """Scan a template literal's text from ``i``; return the index after its closing backquote."""
        src, start = self.source, i
        while src[i] != "`":
            if src[i] == "\\":
                i += 2
            elif src.startswith("${", i):
                self.strings.append(src[start:i])
                self._blank(out, start - 1, i + 2)   # the backquote or "}" before, the text, the "${"
                i = self._code(i + 2, out, in_template=True)
                start = i + 1
                i += 1
            else:
                i += 1
        self.strings.append(src[start:i])
        self._blank(out, start - 1, i + 1)
        return i + 1

    def _starts_regex(self, out: list[str], i: int) -> bool:
        before = "".join(out[:i]).rstrip()
        if not before or before[-1] in REGEX_AFTER:
            return True
        word = re.search(r"(\w+)$", before)
        return bool(word and word.group(1) in REGEX_AFTER_WORDS)


def brace_pairs(code: str) -> list[tuple[int, int]]:
    """Every ``{...}`` of the code, as (open, close) positions."""
    pairs, stack = [], []
    for i, c in enumerate(code):
        if c == "{":
            stack.append(i)
        elif c == "}":
            pairs.append((stack.pop(), i))
    assert not stack, "unbalanced braces"
    return pairs


def matching(code: str, start: int, open_: str, close: str) -> int:
    """The position of the ``close`` that matches the ``open_`` at ``start``."""
    depth = 0
    for i in range(start, len(code)):
        depth += (code[i] == open_) - (code[i] == close)
        if depth == 0:
            return i
    raise AssertionError(f"no {close} for the {open_} at {start}")


@dataclass
class Declaration:
    name: str
    kind: str                   # "function" or "variable"
    at: int                     # position of the name
    scope: tuple[int, int]      # the block it belongs to (the whole script: (-1, len))
    params: tuple[int, int] | None = None     # a function's parameter list, "(" to ")"
    body: tuple[int, int] | None = None       # a function's body, "{" to "}"


def declarations(code: str) -> list[Declaration]:
    pairs = brace_pairs(code)

    def scope(at: int) -> tuple[int, int]:
        inside = [(o, c) for o, c in pairs if o < at < c]
        return max(inside, key=lambda pair: pair[0]) if inside else (-1, len(code))

    def function(name: str, at: int, open_: int | None) -> Declaration:
        params = body = None
        if open_ is not None:
            params = (open_, matching(code, open_, "(", ")"))
            brace = re.match(r"\s*(=>\s*)?\{", code[params[1] + 1:])
            if brace:
                start = params[1] + brace.end()
                body = (start, matching(code, start, "{", "}"))
        return Declaration(name, "function", at, scope(at), params, body)

    found = [function(m.group(1), m.start(1), m.end() - 1)
             for m in re.finditer(rf"\bfunction\s+({IDENT})\s*\(", code)]
    expression = rf"(?:async\s+)?(?:function\b\s*(\()|(\()[^()]*\)\s*=>|{IDENT}\s*=>)"
    for m in re.finditer(rf"\b(?:const|let|var)\s+({IDENT})\s*=\s*{expression}", code):
        open_ = m.start(2) if m.group(2) else m.start(3) if m.group(3) else None
        found.append(function(m.group(1), m.start(1), open_))
    functions = {d.at for d in found}
    for m in re.finditer(r"\b(?:const|let|var)\s+", code):
        if scope(m.start()) != (-1, len(code)):
            continue                     # only the top level: a block's locals are its own business
        i = m.end()
        while True:                      # each declarator: name [= value], up to "," or ";" at depth 0
            name = re.match(IDENT, code[i:])
            if not name:
                break                    # a destructuring pattern: not checked
            if i not in functions:
                found.append(Declaration(name.group(0), "variable", i, (-1, len(code))))
            depth, j = 0, i
            while j < len(code) and not (depth == 0 and code[j] in ",;\n"):   # a line break inside brackets only
                depth += code[j] in "([{"
                depth -= code[j] in ")]}"
                j += 1
            if j >= len(code) or code[j] != ",":
                break
            i = j + 1 + len(code[j + 1:]) - len(code[j + 1:].lstrip())
    return found


def uses(code: str, declaration: Declaration, shadows: list[Declaration]) -> list[int]:
    """Where ``declaration``'s name is used in its scope: not its own name or body, not a
    property (``x.name``), not an object key (``{ name: ...}``), not a listener being
    removed, not where another declaration shadows it."""
    start, end = declaration.scope
    found = []
    for m in re.finditer(rf"(?<![\w$.]){re.escape(declaration.name)}(?![\w$])", code):
        at = m.start()
        if not start < at < end or at == declaration.at:
            continue
        if declaration.body and declaration.body[0] < at < declaration.body[1]:
            continue                      # a function that only calls itself is not used
        if re.search(r"\bremoveEventListener\(\s*[^,()]*,\s*$", code[max(0, at - 200):at]):
            continue                      # taking a listener away is no use of it
        if re.match(r"\s*:(?!:)", code[m.end():]) and re.search(r"[{,]\s*$", code[max(0, at - 200):at]):
            continue                      # an object key
        if any(s.scope[0] < at < s.scope[1] and start < s.scope[0] for s in shadows):
            continue
        found.append(at)
    return found


def option_names(code: str, params: tuple[int, int]) -> list[str]:
    """The names a parameter list takes from an object: ``(url, { a, b = 1, c: d })`` -> a, b, c."""
    text = code[params[0] + 1:params[1]]
    names = []
    for m in re.finditer(r"\{([^{}]*)\}", text):
        for part in m.group(1).split(","):
            name = re.match(rf"\s*({IDENT})", part)
            if name:
                names.append(name.group(1))
    return names


def script_problems(script: Script, handlers: list[str]) -> list[str]:
    code = script.code
    found = declarations(code)
    report = []
    attributes = " ".join(Script(h).code for h in handlers)
    for d in found:
        shadows = [s for s in found if s.name == d.name and s is not d]
        used = uses(code, d, shadows)
        if not used and d.scope[0] < 0:
            used = re.findall(rf"(?<![\w$.]){re.escape(d.name)}(?![\w$])", attributes)
        if not used:
            report.append(f"function {d.name}() is never used" if d.kind == "function"
                          else f"top-level variable {d.name} is never used")
        if d.kind == "function" and d.params:
            outside = code[:d.params[0]] + " " * (d.params[1] - d.params[0]) + code[d.params[1]:]
            for option in option_names(code, d.params):
                key = rf"[{{,]\s*{re.escape(option)}\s*(:(?!:)|[,}}]|\([^()]*\)\s*\{{)"   # a: ..., shorthand, a() {...}
                passed = re.search(key, outside)
                if not passed:
                    report.append(f"option {option} of {d.name}() is never passed")
    return report


def script_references(source: str) -> tuple[set[str], set[str], set[str]]:
    """The ids the script looks up, and the element names and classes it makes."""
    ids = set(re.findall(r"""(?:\$|getElementById)\(\s*["']([^"']+)["']\s*\)""", source))
    ids |= set(re.findall(r"""querySelector(?:All)?\(\s*["']#([\w-]+)["']""", source))
    tags = set(re.findall(r"""createElement\(\s*["']([\w-]+)["']""", source))
    classes = set()
    for value in re.findall(r"""\.className\s*=\s*["']([^"']*)["']""", source):
        classes |= set(value.split())
    classes |= set(re.findall(r"""classList\.(?:add|toggle)\(\s*["']([\w-]+)["']""", source))
    return ids, tags, classes


# ------------------------------------------------------------ the stylesheet

@dataclass
class Compound:
    tag: str | None
    ids: list[str]
    classes: list[str]
    attrs: list[tuple[str, str | None]]
    root: bool                         # :root

    def matches(self, element: Element) -> bool:
        if self.root and element.tag != "html":
            return False
        if self.tag not in (None, "*") and element.tag != self.tag:
            return False
        return all(element.attrs.get("id") == i for i in self.ids) and set(self.classes) <= element.classes


def parse_selector(selector: str) -> list[tuple[str, Compound]]:
    """``a > b c`` -> [("", a), (">", b), (" ", c)]: each compound with the combinator before it."""
    parts: list[tuple[str, Compound]] = []
    tokens = re.findall(r"\s*([>+~])\s*|(\s+)|((?:[^\s>+~\[(]|\[[^\]]*\]|\([^)]*\))+)", selector.strip())
    combinator = ""
    for symbol, space, compound in tokens:
        if symbol or space:
            combinator = symbol or combinator or " "
            continue
        tag = re.match(r"[A-Za-z][\w-]*|\*", compound)
        attrs = [(name, value) for name, value in
                 re.findall(r"""\[\s*([\w-]+)\s*(?:[~|^$*]?=\s*["']?([^"'\]]*)["']?)?\s*\]""", compound)]
        parts.append((combinator, Compound(
            tag.group(0) if tag else None,
            re.findall(r"#([\w-]+)", re.sub(r"\[[^\]]*\]", "", compound)),
            re.findall(r"\.([\w-]+)", re.sub(r"\[[^\]]*\]|\([^)]*\)", "", compound)),
            [(name, value or None) for name, value in attrs],
            bool(re.search(r"(?<!:):root\b", compound)),
        )))
        combinator = ""
    return parts


def selector_matches(parts: list[tuple[str, Compound]], elements: list[Element]) -> bool:
    """Does the selector (pseudo-classes and attribute selectors aside) match an element of the tree?"""
    def match(element: Element, index: int) -> bool:
        before, compound = parts[index]       # the combinator that links it to the compound before
        if not compound.matches(element):
            return False
        if index == 0:
            return True
        if before == ">":
            candidates = [element.parent] if element.parent else []
        elif before == "+":
            candidates = element.previous_siblings()[:1]
        elif before == "~":
            candidates = element.previous_siblings()
        else:
            candidates = element.ancestors()
        return any(match(candidate, index - 1) for candidate in candidates)

    return any(match(element, len(parts) - 1) for element in elements)


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets, parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(text):
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def css_rules(css: str) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """The style rules (selector list, declarations), the @keyframes names, and other at-rules' preludes."""
    css = re.sub(r"/\*.*?\*/", " ", css, flags=re.S)
    rules, keyframes, at_rules = [], [], []
    i = 0
    while True:
        brace = css.find("{", i)
        semicolon = css.find(";", i)
        if brace < 0:
            if css[i:].strip():
                at_rules.append(css[i:].strip())
            break
        prelude = css[i:brace].strip()
        if semicolon >= 0 and semicolon < brace and prelude.startswith("@"):
            at_rules.append(css[i:semicolon].strip())    # @import ...; @charset ...;
            i = semicolon + 1
            continue
        end = matching(css, brace, "{", "}")
        body = css[brace + 1:end]
        if prelude.startswith("@keyframes"):
            keyframes.append(prelude.split()[1])
        elif prelude.startswith(("@media", "@supports")):
            inner, inner_keyframes, inner_at = css_rules(body)
            rules += inner
            keyframes += inner_keyframes
            at_rules += inner_at
        elif prelude.startswith("@"):
            at_rules.append(prelude)
        else:
            rules.append((prelude, body.strip()))
        i = end + 1
    return rules, keyframes, at_rules


def style_problems(css: str, parser: PageParser, script: Script) -> list[str]:
    report = []
    rules, keyframes, at_rules = css_rules(css)
    script_ids, script_tags, script_classes = script_references(script.source)
    html_ids = {e.attrs["id"] for e in parser.elements if "id" in e.attrs}
    html_classes = set().union(*(e.classes for e in parser.elements))
    html_tags = {e.tag for e in parser.elements}
    set_values = set(script.strings) | {v for e in parser.elements for v in e.attrs.values()}
    for prelude in at_rules:
        report.append(f"CSS {prelude.split()[0]} is not allowed (nothing from the network)"
                        if prelude.startswith("@import") else f"CSS at-rule not understood: {prelude}")
    text = re.sub(r"/\*.*?\*/", " ", css, flags=re.S)
    for url in re.findall(r"url\(\s*['\"]?([^'\")]*)", text):
        if not url.startswith("data:"):
            report.append(f"CSS url({url}) loads from the network")
    declared = set(re.findall(r"(--[\w-]+)\s*:", text))
    used = set(re.findall(r"var\(\s*(--[\w-]+)", text))
    report += [f"CSS custom property {name} is never used" for name in sorted(declared - used)]
    report += [f"CSS var({name}) is never declared" for name in sorted(used - declared)]
    animations = " ".join(re.findall(r"animation(?:-name)?\s*:([^;}]*)", text))
    report += [f"CSS @keyframes {name} is never used" for name in keyframes
                 if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", animations)]
    for selectors, _ in rules:
        for selector in split_top(selectors):
            parts = parse_selector(selector)
            missing = []
            for _, compound in parts:
                missing += [f"#{i}" for i in compound.ids if i not in html_ids | script_ids]
                missing += [f".{c}" for c in compound.classes if c not in html_classes | script_classes]
                if compound.tag not in (None, "*") and compound.tag not in html_tags | script_tags:
                    missing.append(compound.tag)
                missing += [f"[{name}={value!r}]" for name, value in compound.attrs
                            if value is not None and value not in set_values]
            if missing:
                report.append(f"CSS rule {selector!r}: the page has no {', '.join(missing)}")
                continue
            if selector_matches(parts, parser.elements):
                continue
            subject = parts[-1][1]
            made = (subject.tag in script_tags) or bool(set(subject.classes) & script_classes)
            if not made:
                report.append(f"CSS rule {selector!r} matches no element of the page")
    return report


# -------------------------------------------------------------- the checker

def problems(html: str) -> list[str]:
    """Everything in the page that nothing uses, or that it would load from elsewhere; [] if clean."""
    parser = PageParser()
    parser.feed(html)
    parser.close()
    script = Script("\n".join(parser.scripts))
    found = [f"loads from the network: {what}" for what in parser.external]
    found += script_problems(script, parser.handlers)
    ids = [e.attrs["id"] for e in parser.elements if "id" in e.attrs]
    found += [f"id {i!r} is used by {ids.count(i)} elements" for i in sorted(set(ids)) if ids.count(i) > 1]
    found += [f"<label for={e.attrs['for']!r}> names no element" for e in parser.elements
              if e.tag == "label" and "for" in e.attrs and e.attrs["for"] not in ids]
    looked_up, _, _ = script_references(script.source)
    found += [f"the script looks up #{i}, which the page does not have" for i in sorted(looked_up - set(ids))]
    found += style_problems("\n".join(parser.styles), parser, script)
    return found


# ---------------------------------------------------------------- the pages

@pytest.mark.parametrize("stage", STAGES)
def test_page_holds_only_what_it_uses(stage: str) -> None:
    """No dead function, option, variable or CSS rule; nothing looked up that is not there; nothing from the network."""
    assert problems(page(stage)) == [], stage


def parsed(stage: str) -> PageParser:
    parser = PageParser()
    parser.feed(page(stage))
    parser.close()
    return parser


def script_of(stage: str) -> Script:
    return Script("\n".join(parsed(stage).scripts))


def css_of(stage: str) -> list[tuple[str, str]]:
    return css_rules("\n".join(parsed(stage).styles))[0]


def test_the_inspector_s_view_holds_only_what_it_uses_and_loads_nothing() -> None:
    """common/inspector.html, served by ``python3 -m common inspect``, is held to the stages' rules."""
    assert problems((ROOT / "common" / "inspector.html").read_text(encoding="utf-8")) == []


def test_test1_page_has_only_the_timestamp_stream() -> None:
    """test1 shows a status line and the list of timestamps: no reply box, no input, no button, no chart."""
    elements = parsed("test1").elements
    assert sorted(e.attrs["id"] for e in elements if "id" in e.attrs) == ["messages", "status"]
    assert not [e.tag for e in elements if e.tag in ("input", "button", "output", "canvas")]
    assert "showResponse" not in page("test1")


def test_test1_script_opens_with_the_browser_api() -> None:
    """README: "The top of the page's script is the whole browser API": new WebSocket(url), onopen,
    onmessage, onclose, right after the settings and before any helper function."""
    code = script_of("test1").code
    first_function = code.index("function ")
    for api in ("new WebSocket(", ".onopen =", ".onmessage =", ".onclose ="):
        assert 0 <= code.find(api) < first_function, api
    assert code[:code.index("new WebSocket(")].count("\n") < 20


def test_one_stylesheet_for_all_stages() -> None:
    """A rule reads the same in every stage that has it, and neighbours list their common rules
    in the same order: a stylesheet diff shows only the rules a stage adds or drops."""
    seen: dict[str, tuple[str, str]] = {}
    for stage in STAGES:
        for selectors, body in css_of(stage):
            first = seen.setdefault(selectors, (stage, body))
            assert body == first[1], f"{stage} writes {selectors!r} otherwise than {first[0]}"
    for a, b in NEIGHBOURS:
        common = {s for s, _ in css_of(a)} & {s for s, _ in css_of(b)}
        assert [s for s, _ in css_of(a) if s in common] == [s for s, _ in css_of(b) if s in common], (a, b)


@pytest.mark.parametrize("stage", STAGES)
def test_page_speaks_its_own_servers_protocol(stage: str) -> None:
    """The role message (COMMS, DATA) only where the server reads it (test4); the role paths from
    test4b on, "/" before; no page expects binary messages, which no stage sends."""
    script = script_of(stage)
    strings = set(script.strings)
    assert {"COMMS", "DATA"} & strings == ({"COMMS", "DATA"} if stage == "test4" else set())
    paths = {"/", "/commands/", "/stream_data/"} & strings
    assert paths == ({"/commands/", "/stream_data/"} if stage >= "test4b" else {"/"})
    assert not re.search(r"\b(Blob|ArrayBuffer|binaryType)\b", script.code)
    assert not ("typeof" in script.code and "string" in strings), "a branch for messages that are not text"


# ------------------------------------------------------- the checker itself

CLEAN = """<!doctype html><html><head><style>
  :root { --ink: #111; }
  body { color: var(--ink); }
  #list li.new { font-weight: 700; }
  .card > .row + #status { margin-top: 12px; }
  #status[data-state="open"] { animation: blink 1s; }
  @keyframes blink { to { opacity: .5; } }
</style></head><body>
<section class="card"><div class="row"><button id="go">Go</button></div><p id="status"></p></section>
<ol id="list"></ol>
<script>
"use strict";
const LIMIT = 10;
function $(id) { return document.getElementById(id); }
function add(text) {
  const item = document.createElement("li");
  item.className = "new";
  item.textContent = `${text} (${[1, 2].map((n) => n * 2).join("/")})`;   // a "}" in a string: ok
  if ($("list").children.length < LIMIT) $("list").append(item);
}
function keep(url, { onMessage }) {
  function retry() { setTimeout(retry, 1000); }   // an inner function used by itself, in its scope
  retry();
  return onMessage;
}
const twice = (x) => x * 2;
$("go").addEventListener("click", () => add(twice(1)));
keep("/", { onMessage: add });
$("status").dataset.state = "open";
</script></body></html>"""


def test_checker_passes_a_clean_page() -> None:
    assert problems(CLEAN) == []


def plant(html: str, *, css: str = "", script: str = "", body: str = "") -> str:
    html = html.replace("</style>", css + "\n</style>")
    html = html.replace("</script>", script + "\n</script>")
    return html.replace("<ol id=\"list\"></ol>", "<ol id=\"list\"></ol>" + body)


def test_checker_reports_an_unused_function() -> None:
    """A helper that nothing calls (test1's showResponse() on main) is reported; called, it is not."""
    helper = "function showResponse(text) { $(\"list\").textContent = text; }"
    assert problems(plant(CLEAN, script=helper)) == ["function showResponse() is never used"]
    assert problems(plant(CLEAN, script=helper + "\nshowResponse('x');")) == []
    assert problems(plant(CLEAN, body='<button onclick="showResponse(1)">x</button>', script=helper)) == []


def test_checker_reports_an_unused_arrow_function_and_variable() -> None:
    assert problems(plant(CLEAN, script="const thrice = (x) => x * 3;\nlet count = 0;")) == [
        "function thrice() is never used", "top-level variable count is never used"]


def test_checker_tells_a_shadowed_name_from_the_outer_one() -> None:
    """An inner connect() used in its own scope does not make an unused outer connect() used."""
    code = ("function connect() {}\n"
            "function outer() { function connect() { setTimeout(connect, 1); } connect(); }\nouter();")
    assert problems(plant(CLEAN, script=code)) == ["function connect() is never used"]


def test_checker_reports_a_function_that_only_calls_itself() -> None:
    code = "function again(n) { if (n) again(n - 1); }\nconst loop = (n) => { if (n) setTimeout(loop, 1); };"
    assert problems(plant(CLEAN, script=code)) == ["function again() is never used", "function loop() is never used"]


def test_checker_reports_a_listener_that_is_only_removed() -> None:
    code = 'function onShow() {}\ndocument.removeEventListener("visibilitychange", onShow);'
    assert problems(plant(CLEAN, script=code)) == ["function onShow() is never used"]
    added = 'document.addEventListener("visibilitychange", onShow);\n'
    assert problems(plant(CLEAN, script=added + code)) == []


def test_checker_reports_an_option_no_call_passes() -> None:
    """keep(url, { onMessage, hello }) that no call gives a hello (test4b's page on main); given, it passes."""
    html = CLEAN.replace("function keep(url, { onMessage }) {", "function keep(url, { onMessage, hello }) {\n  if (hello) retry();")
    assert problems(html) == ["option hello of keep() is never passed"]
    assert problems(html.replace('keep("/", { onMessage: add });', 'keep("/", { hello: "DATA", onMessage: add });')) == []


def test_checker_reports_css_for_elements_the_page_lacks() -> None:
    """Rules for a missing id, class or element (test1's #response, .reply, input on main) are reported."""
    css = ("  #response:empty::before { content: 'none'; }\n  .reply { gap: 1px; }\n"
           "  input { flex: 1; }\n  #legend li { gap: 1px; }")
    assert problems(plant(CLEAN, css=css)) == [
        "CSS rule '#response:empty::before': the page has no #response",
        "CSS rule '.reply': the page has no .reply",
        "CSS rule 'input': the page has no input",
        "CSS rule '#legend li': the page has no #legend",
    ]


def test_checker_reports_a_selector_that_matches_nothing_as_written() -> None:
    """Every name exists, but not in that arrangement: #status comes after .row, never before it."""
    assert problems(plant(CLEAN, css="  .card > #status + .row { margin: 0; }")) == [
        "CSS rule '.card > #status + .row' matches no element of the page"]


def test_checker_reports_unused_custom_properties_keyframes_and_attribute_values() -> None:
    css = "  :root { --spare: 1px; }\n  @keyframes spin { to { opacity: 0; } }\n  #status[data-state=\"lost\"] { color: red; }"
    assert problems(plant(CLEAN, css=css)) == [
        "CSS custom property --spare is never used",
        "CSS @keyframes spin is never used",
        "CSS rule '#status[data-state=\"lost\"]': the page has no [data-state='lost']",
    ]


def test_checker_reports_lookups_of_missing_elements_and_duplicate_ids() -> None:
    found = problems(plant(CLEAN, script='$("response").textContent = "";', body='<p id="go"></p><label for="nowhere">x</label>'))
    assert found == ["id 'go' is used by 2 elements", "<label for='nowhere'> names no element",
                     "the script looks up #response, which the page does not have"]


def test_checker_reports_what_would_load_from_the_network() -> None:
    html = plant(CLEAN, css="  body { background: url(https://example.invalid/a.png); }\n  @import url(x.css);",
                 body='<img src="https://example.invalid/b.png"><script src="lib.js"></script>')
    found = problems(html)
    assert "loads from the network: <img src='https://example.invalid/b.png'>" in found
    assert "loads from the network: <script src='lib.js'>" in found
    assert "CSS url(https://example.invalid/a.png) loads from the network" in found
    assert "CSS @import is not allowed (nothing from the network)" in found


def test_checker_ignores_names_in_strings_and_comments() -> None:
    """A name inside a string, a template's text or a comment is no use of it."""
    code = ('function lonely() {}\n// lonely() is called nowhere\nconst s = "lonely()" + `lonely() ${1}`;\n'
            "s.length;")
    assert problems(plant(CLEAN, script=code)) == ["function lonely() is never used"]
