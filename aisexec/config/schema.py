"""One schema for openais.conf: checking a RawSection tree and building the validated Config.

Key types, ranges and defaults come from the configobj configspec in
:mod:`aisexec.config.configspec`, checked with configobj's ``Validator``;
the section layout (where a section may appear, which ones repeat) is
:data:`SECTIONS`.  Relations between keys are checked here, the Totem timer
relations by :meth:`aisexec.totem.config.TotemConfig.validate`.  Every
problem raises :class:`ConfigError` with file, line and dotted key; unknown
names come with the nearest valid one.
"""

from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass
from functools import cache

from configobj import ConfigObj

try:  # configobj >= 5.0.7 ships validate inside the package; 5.0.x also as a top-level shim
    from configobj.validate import ValidateError, Validator, VdtTypeError
except ImportError:  # pragma: no cover - older layout
    from validate import ValidateError, Validator, VdtTypeError

from aisexec.config.configspec import SPEC_TEXT
from aisexec.config.errors import ConfigError
from aisexec.config.model import Config
from aisexec.config.tree import RawKey, RawSection
from aisexec.totem.config import TotemConfig, TotemConfigError


@dataclass(frozen=True, slots=True)
class SectionRule:
    """Where a section may appear and whether it may be given more than once."""

    parent: str
    repeated: bool


#: Every section of openais.conf, by name: its parent section ("" = top level) and whether it repeats.
SECTIONS: dict[str, SectionRule] = {
    "totem": SectionRule("", False),
    "interface": SectionRule("totem", True),
    "member": SectionRule("interface", True),
    "logging": SectionRule("", False),
    "logger_subsys": SectionRule("logging", True),
    "aisexec": SectionRule("", False),
    "amf": SectionRule("", False),
    "event": SectionRule("", False),
    "uidgid": SectionRule("", True),
    # service sections: checked against their configspec block, handed to services by name
    "ckpt": SectionRule("", False),
    "lck": SectionRule("", False),
    "msg": SectionRule("", False),
    "quorum": SectionRule("", False),
}

#: Sections whose checked values reach services through ``Config.services[name]``.
SERVICE_SECTIONS = ("ckpt", "lck", "msg", "quorum")


def _ip_address(value, *args, **kwargs) -> str | None:
    """configobj check ``ip_address()``: an IPv4 or IPv6 address, returned normalised."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError as exc:
        raise VdtTypeError(value) from exc


_VALIDATOR = Validator({"ip_address": _ip_address})


@cache
def spec() -> ConfigObj:
    """The parsed configspec (section name -> key -> check string)."""
    return ConfigObj(SPEC_TEXT.splitlines(), list_values=False, _inspec=True)


def key_checks(section: str) -> dict[str, str]:
    """The check string of every key of ``section``."""
    return dict(spec()[section])


def describe_check(check: str) -> str:
    """A human description of a configspec check, for error messages and docs."""
    fun, args, kwargs, _default = _VALIDATOR._parse_with_caching(check)
    lo, hi = kwargs.get("min"), kwargs.get("max")
    if fun == "integer":
        if lo is not None and lo == hi:
            return f"the integer {lo}"
        if lo is not None and hi is not None:
            return f"an integer from {lo} to {hi}"
        return f"an integer >= {lo}" if lo is not None else "an integer"
    if fun == "boolean":
        return "yes or no (on/off, true/false, 1/0)"
    if fun == "option":
        return "one of: " + ", ".join(args)
    if fun == "ip_address":
        return "an IPv4 or IPv6 address"
    if fun == "string":
        return f"a string of at most {hi} characters" if hi is not None else "a non-empty string"
    return fun


def default_of(section: str, key: str):
    """The default of ``section.key`` (None when unset by default); KeyError if the key is required."""
    return _VALIDATOR.get_default_value(spec()[section][key])


def _suggest(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


@dataclass(slots=True)
class _Checked:
    """The checked values of one raw section, with the line of each key given."""

    raw: RawSection
    path: str
    values: dict
    lines: dict[str, int]

    def line_of(self, key: str) -> int:
        """Line of ``key`` if it was written, else of the section header."""
        return self.lines.get(key, self.raw.line)

    def error(self, key: str, message: str, suggestion: str | None = None) -> ConfigError:
        """A ConfigError located at ``key`` of this section."""
        return ConfigError(self.raw.file, self.line_of(key), f"{self.path}.{key}", message, suggestion)


def _check_value(raw: RawSection, path: str, key: RawKey, check: str):
    try:
        return _VALIDATOR.check(check, key.value)
    except ValidateError as exc:
        hint = ""
        if " #" in key.value or key.value.startswith("#"):
            hint = "; note that '#' after a value is not a comment in this format"
        raise ConfigError(
            raw.file, key.line, f"{path}.{key.name}",
            f"invalid value {key.value!r}: expected {describe_check(check)}{hint}",
        ) from exc


def check_section(raw: RawSection, path: str) -> _Checked:
    """Check the keys of one section against the configspec; fill defaults."""
    checks = key_checks(raw.name)
    values: dict = {}
    lines: dict[str, int] = {}
    for key in raw.keys:
        check = checks.get(key.name)
        if check is None:
            raise ConfigError(raw.file, key.line, f"{path}.{key.name}", f"unknown key in section '{raw.name}'",
                              _suggest(key.name, checks))
        values[key.name] = _check_value(raw, path, key, check)
        lines[key.name] = key.line
    for name, check in checks.items():
        if name in values:
            continue
        try:
            values[name] = _VALIDATOR.get_default_value(check)
        except KeyError:
            raise ConfigError(raw.file, raw.line, f"{path}.{name}", "missing required key") from None
    ordered = {name: values[name] for name in checks}
    return _Checked(raw=raw, path=path, values=ordered, lines=lines)


def _check_layout(raw: RawSection, parent: str, path: str) -> None:
    """Reject unknown, misplaced or duplicated sections below ``raw``, recursively."""
    allowed = {name for name, rule in SECTIONS.items() if rule.parent == parent}
    seen: dict[str, int] = {}
    for sub in raw.sections:
        sub_path = f"{path}.{sub.name}" if path else sub.name
        rule = SECTIONS.get(sub.name)
        if sub.name not in allowed:
            if rule is not None:
                where = f"inside '{rule.parent}'" if rule.parent else "at the top level"
                message = f"section '{sub.name}' is not allowed here; it belongs {where}"
                raise ConfigError(raw.file, sub.line, sub_path, message)
            raise ConfigError(raw.file, sub.line, sub_path, "unknown section", _suggest(sub.name, allowed))
        if not rule.repeated and sub.name in seen:
            raise ConfigError(raw.file, sub.line, sub_path, f"section given twice (first at line {seen[sub.name]})")
        seen.setdefault(sub.name, sub.line)
        _check_layout(sub, sub.name, sub_path)


def _single(root: RawSection, name: str) -> RawSection:
    found = root.section(name)
    return found[0] if found else RawSection(name=name, line=0, file=root.file)


def _build_totem(totem: _Checked) -> tuple[dict, TotemConfig]:
    values = dict(totem.values)
    try:
        tc = TotemConfig.from_mapping(values)
    except TotemConfigError as exc:
        raise totem.error(exc.key, exc.message) from exc
    for name in ("token_retransmit", "hold", "consensus"):
        values[name] = getattr(tc, name)
    if values["rrp_token_expired_timeout"] is None:
        values["rrp_token_expired_timeout"] = tc.token_retransmit
    return values, tc


def _build_interfaces(totem: _Checked) -> list[dict]:
    raws = totem.raw.section("interface")
    if not raws:
        raise ConfigError(totem.raw.file, totem.raw.line, "totem.interface",
                          "no interface defined: give at least one 'interface { bindnetaddr, mcastaddr/members }'")
    transport = totem.values["transport"]
    interfaces: list[tuple[_Checked, dict]] = []
    rings: dict[int, _Checked] = {}
    for raw in raws:
        itf = check_section(raw, "totem.interface")
        entry = dict(itf.values)
        ring = entry["ringnumber"]
        if ring in rings:
            raise itf.error("ringnumber", f"ring {ring} is defined twice (first at line {rings[ring].raw.line})")
        rings[ring] = itf
        bind = ipaddress.ip_address(entry["bindnetaddr"])
        if transport == "udp" and not entry["broadcast"]:
            if entry["mcastaddr"] is None:
                raise itf.error("mcastaddr", "transport udp needs mcastaddr (or 'broadcast: yes')")
            mcast = ipaddress.ip_address(entry["mcastaddr"])
            if not mcast.is_multicast:
                raise itf.error("mcastaddr", f"{mcast} is not a multicast address")
            if mcast.version != bind.version:
                raise itf.error("mcastaddr", f"IPv{mcast.version} group with an IPv{bind.version} bindnetaddr")
        members = []
        for member_raw in raw.section("member"):
            member = check_section(member_raw, "totem.interface.member")
            addr = ipaddress.ip_address(member.values["memberaddr"])
            if addr.version != bind.version:
                raise member.error("memberaddr", f"IPv{addr.version} member on an IPv{bind.version} ring")
            members.append(dict(member.values))
        if transport == "udpu" and not members:
            raise ConfigError(raw.file, raw.line, "totem.interface.member",
                              "transport udpu needs the member list: add 'member { memberaddr: ... }' blocks")
        if bind.version == 6 and totem.values["nodeid"] is None:
            raise totem.error("nodeid", f"an IPv6 ring (bindnetaddr {bind}) needs an explicit totem.nodeid")
        entry["members"] = members
        interfaces.append((itf, entry))
    count = len(interfaces)
    if count > 2:
        raise interfaces[2][0].error("ringnumber", "at most two interfaces (rings 0 and 1) are supported")
    if count > 1 and totem.values["rrp_mode"] == "none":
        raise totem.error("rrp_mode", "two interfaces need rrp_mode active or passive")
    for itf, entry in interfaces:
        if entry["ringnumber"] >= count:
            raise itf.error("ringnumber", f"ring {entry['ringnumber']} given but only {count} interface(s) defined")
    for i, (itf_a, a) in enumerate(interfaces):
        for _itf_b, b in interfaces[i + 1 :]:
            if a["mcastaddr"] is not None and a["mcastaddr"] == b["mcastaddr"]:
                if abs(a["mcastport"] - b["mcastport"]) <= 1:
                    raise itf_a.error("mcastport", "two rings on one group need ports at least 2 apart")
    return [entry for _itf, entry in sorted(interfaces, key=lambda pair: pair[1]["ringnumber"])]


def _logging_values(checked: _Checked) -> dict:
    values = dict(checked.values)
    to_file = values.pop("to_file")
    if "to_logfile" not in checked.lines and to_file is not None:
        values["to_logfile"] = to_file
    return values


def _build_logging(root: RawSection) -> tuple[dict, list[dict]]:
    raw = _single(root, "logging")
    checked = check_section(raw, "logging")
    logging = _logging_values(checked)
    if logging["to_logfile"] and not logging["logfile"]:
        key = "to_logfile" if "to_logfile" in checked.lines else "to_file"
        raise checked.error(key, "logging to a file needs 'logfile'")
    subsystems = []
    seen: dict[str, int] = {}
    for sub_raw in raw.section("logger_subsys"):
        sub = check_section(sub_raw, "logging.logger_subsys")
        entry = _logging_values(sub)
        name = entry["subsys"]
        if name in seen:
            raise sub.error("subsys", f"subsystem {name!r} configured twice (first at line {seen[name]})")
        seen[name] = sub.line_of("subsys")
        for key, value in logging.items():
            if entry.get(key) is None:
                entry[key] = value
        if entry["to_logfile"] and not entry["logfile"]:
            raise sub.error("to_logfile", "logging to a file needs 'logfile'")
        subsystems.append(entry)
    return logging, subsystems


def _build_event(root: RawSection) -> dict:
    checked = check_section(_single(root, "event"), "event")
    values = checked.values
    if values["delivery_queue_resume"] >= values["delivery_queue_size"]:
        raise checked.error("delivery_queue_resume",
                            f"{values['delivery_queue_resume']} must be below delivery_queue_size "
                            f"({values['delivery_queue_size']})")
    return dict(values)


def _build_uidgid(root: RawSection) -> list[dict]:
    out = []
    for raw in root.section("uidgid"):
        checked = check_section(raw, "uidgid")
        if checked.values["uid"] is None and checked.values["gid"] is None:
            raise ConfigError(raw.file, raw.line, "uidgid", "uidgid section needs 'uid' or 'gid'")
        out.append(dict(checked.values))
    return out


def _build_quorum(root: RawSection, totem: dict, interfaces: list[dict]) -> dict:
    """The quorum section with votequorum's relations checked; ``expected_votes`` derived when unset."""
    checked = check_section(_single(root, "quorum"), "quorum")
    values = dict(checked.values)
    if not root.section("quorum"):
        return values
    members = interfaces[0]["members"] if interfaces else []
    if values["expected_votes"] is None:
        if not members:
            raise checked.error("expected_votes", "is required without a member list (transport udp): "
                                                  "give the votes of the whole cluster")
        values["expected_votes"] = sum(int(m.get("votes") or 1) for m in members)
    if values["two_node"]:
        if values["expected_votes"] != 2:
            raise checked.error("two_node", f"two_node needs expected_votes 2, not {values['expected_votes']}")
        if values["wait_for_all"] is None:
            values["wait_for_all"] = True  # votequorum(5): two_node enables wait_for_all
    if values["wait_for_all"] is None:
        values["wait_for_all"] = False
    votes = totem.get("votes")
    if votes is not None and votes > values["expected_votes"]:
        raise ConfigError(root.file, 0, "totem.votes",
                          f"this node's {votes} votes exceed quorum.expected_votes {values['expected_votes']}")
    return values


def _build_services(root: RawSection, totem: dict, interfaces: list[dict]) -> dict[str, dict]:
    out = {name: dict(check_section(_single(root, name), name).values) for name in SERVICE_SECTIONS}
    out["quorum"] = _build_quorum(root, totem, interfaces)
    return out


def validate_tree(root: RawSection, source: str = "", iface: str = "") -> Config:
    """Check a parser's raw tree against the schema and return the validated Config.

    Raises ConfigError (file, line, dotted key, message, suggestion) on the
    first problem found.
    """
    if root.keys:
        first = root.keys[0]
        raise ConfigError(root.file, first.line, first.name, "key outside any section")
    _check_layout(root, "", "")
    totem_raw = root.section("totem")
    if not totem_raw:
        raise ConfigError(root.file, 0, "totem", "missing required section 'totem { }'")
    totem = check_section(totem_raw[0], "totem")
    totem_values, totem_config = _build_totem(totem)
    interfaces = _build_interfaces(totem)
    logging, subsystems = _build_logging(root)
    return Config(
        totem=totem_values,
        totem_config=totem_config,
        interfaces=interfaces,
        logging=logging,
        logger_subsys=subsystems,
        aisexec=dict(check_section(_single(root, "aisexec"), "aisexec").values),
        amf=dict(check_section(_single(root, "amf"), "amf").values),
        event=_build_event(root),
        uidgid=_build_uidgid(root),
        services=_build_services(root, totem_values, interfaces),
        present=frozenset(name for name in SECTIONS if SECTIONS[name].parent == "" and root.section(name)),
        source=source or root.file,
        iface=iface,
    )
