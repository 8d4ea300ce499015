"""One schema for openais.conf: checking a RawSection tree and building the validated Config.

Key types, ranges and defaults come from the configobj configspec in
:mod:`aisexec.config.configspec` (the executive's own sections) and from the
:class:`~aisexec.config.sections.ConfigSection` each service plugin declares
(the core names no service's section), checked with configobj's
``Validator``; the layout of the executive's sections (where a section may
appear, which ones repeat) is :data:`SECTIONS`, a service's section is a
single top-level one.  Relations between keys are checked here for the
executive's sections, by the declaring plugin's ``check`` for a service's,
and the Totem timer relations by
:meth:`aisexec.totem.config.TotemConfig.validate`.  Every problem raises
:class:`ConfigError` with file, line and dotted key; unknown names come with
the nearest valid one.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterable
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
from aisexec.config.sections import CheckedSection, ConfigSection, SectionContext, merge
from aisexec.config.tree import RawKey, RawSection
from aisexec.totem.config import TotemConfig, TotemConfigError


@dataclass(frozen=True, slots=True)
class SectionRule:
    """Where a section may appear and whether it may be given more than once."""

    parent: str
    repeated: bool


#: The executive's own sections of openais.conf, by name: parent section ("" = top level) and whether it
#: repeats.  Services' sections come from their plugins (:class:`Schema`).
SECTIONS: dict[str, SectionRule] = {
    "totem": SectionRule("", False),
    "interface": SectionRule("totem", True),
    "member": SectionRule("interface", True),
    "logging": SectionRule("", False),
    "logger_subsys": SectionRule("logging", True),
    "aisexec": SectionRule("", False),
    "uidgid": SectionRule("", True),
}


def _ip_address(value, *args, **kwargs) -> str | None:
    """configobj check ``ip_address()``: an IPv4 or IPv6 address, returned normalised."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError as exc:
        raise VdtTypeError(value) from exc


_VALIDATOR = Validator({"ip_address": _ip_address})


class Schema:
    """The executive's sections plus the sections the given service plugins declare.

    Raises ValueError when a declaration claims an executive section or one
    already declared, or its spec is not configspec text.
    """

    def __init__(self, services: Iterable[ConfigSection] = ()) -> None:
        self.services: dict[str, ConfigSection] = merge(SECTIONS, services)
        self.rules: dict[str, SectionRule] = {**SECTIONS, **{name: SectionRule("", False) for name in self.services}}
        text = SPEC_TEXT.splitlines()
        for section in self.services.values():
            text += section.spec_lines()
        try:
            self.spec = ConfigObj(text, list_values=False, _inspec=True)
        except Exception as exc:
            raise ValueError(f"a service's config section spec does not parse: {exc}") from exc
        for section in self.services.values():
            for key, check in self.spec[section.name].items():
                if not isinstance(check, str):
                    raise ValueError(f"config section {section.name!r} of {section.origin}: {key} is not a key")
                try:
                    fun = _VALIDATOR._parse_with_caching(check)[0]
                    if fun not in _VALIDATOR.functions:
                        raise ValueError(f"unknown check {fun!r}")
                    try:
                        _VALIDATOR.get_default_value(check)  # a default must pass its own check
                    except KeyError:
                        pass  # no default: a required key
                except Exception as exc:
                    raise ValueError(f"config section {section.name!r} of {section.origin}: "
                                     f"{key} = {check}: {exc}") from exc

    def key_checks(self, section: str) -> dict[str, str]:
        """The check string of every key of ``section``."""
        return dict(self.spec[section])


@cache
def installed_schema(blocked: frozenset[str]) -> Schema:
    """The schema of the executive plus every installed service plugin whose entry point is not in ``blocked``.

    Raises :class:`aisexec.plugins.PluginError` when a plugin's declaration cannot be accepted.
    """
    from aisexec import plugins  # late: plugins imports the service layer

    try:
        return Schema(plugins.service_config_sections(blocked))
    except ValueError as exc:
        raise plugins.PluginError(str(exc)) from None


def current_schema(blocked: frozenset[str] | None = None) -> Schema:
    """The installed schema for ``blocked`` (default: ``OPENAIS_BLOCK_SERVICES`` now)."""
    from aisexec import plugins

    return installed_schema(plugins.blocked_services() if blocked is None else blocked)


def key_checks(section: str) -> dict[str, str]:
    """The check string of every key of ``section`` in the installed schema."""
    return current_schema().key_checks(section)


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
    return _VALIDATOR.get_default_value(current_schema().spec[section][key])


def _suggest(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


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


def check_section(raw: RawSection, path: str, schema: Schema | None = None, given: bool = True) -> CheckedSection:
    """Check the keys of one section against the configspec; fill defaults."""
    checks = (schema or current_schema()).key_checks(raw.name)
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
    return CheckedSection(raw=raw, path=path, values=ordered, lines=lines, given=given)


def _check_layout(raw: RawSection, parent: str, path: str, schema: Schema) -> None:
    """Reject unknown, misplaced or duplicated sections below ``raw``, recursively."""
    rules = schema.rules
    allowed = {name for name, rule in rules.items() if rule.parent == parent}
    seen: dict[str, int] = {}
    for sub in raw.sections:
        sub_path = f"{path}.{sub.name}" if path else sub.name
        rule = rules.get(sub.name)
        if sub.name not in allowed:
            if rule is not None:
                where = f"inside '{rule.parent}'" if rule.parent else "at the top level"
                message = f"section '{sub.name}' is not allowed here; it belongs {where}"
                raise ConfigError(raw.file, sub.line, sub_path, message)
            message = "unknown section"
            if not parent:
                message += " (a service's section is known only while its plugin is installed and not blocked)"
            raise ConfigError(raw.file, sub.line, sub_path, message, _suggest(sub.name, allowed))
        if not rule.repeated and sub.name in seen:
            raise ConfigError(raw.file, sub.line, sub_path, f"section given twice (first at line {seen[sub.name]})")
        seen.setdefault(sub.name, sub.line)
        _check_layout(sub, sub.name, sub_path, schema)


def _single(root: RawSection, name: str) -> RawSection:
    found = root.section(name)
    return found[0] if found else RawSection(name=name, line=0, file=root.file)


def _build_totem(totem: CheckedSection) -> tuple[dict, TotemConfig]:
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


def _build_interfaces(totem: CheckedSection, schema: Schema) -> list[dict]:
    raws = totem.raw.section("interface")
    if not raws:
        raise ConfigError(totem.raw.file, totem.raw.line, "totem.interface",
                          "no interface defined: give at least one 'interface { bindnetaddr, mcastaddr/members }'")
    transport = totem.values["transport"]
    interfaces: list[tuple[CheckedSection, dict]] = []
    rings: dict[int, CheckedSection] = {}
    for raw in raws:
        itf = check_section(raw, "totem.interface", schema)
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
            member = check_section(member_raw, "totem.interface.member", schema)
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


def _logging_values(checked: CheckedSection) -> dict:
    values = dict(checked.values)
    to_file = values.pop("to_file")
    if "to_logfile" not in checked.lines and to_file is not None:
        values["to_logfile"] = to_file
    return values


def _build_logging(root: RawSection, schema: Schema) -> tuple[dict, list[dict]]:
    raw = _single(root, "logging")
    checked = check_section(raw, "logging", schema)
    logging = _logging_values(checked)
    if logging["to_logfile"] and not logging["logfile"]:
        key = "to_logfile" if "to_logfile" in checked.lines else "to_file"
        raise checked.error(key, "logging to a file needs 'logfile'")
    subsystems = []
    seen: dict[str, int] = {}
    for sub_raw in raw.section("logger_subsys"):
        sub = check_section(sub_raw, "logging.logger_subsys", schema)
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


def _build_uidgid(root: RawSection, schema: Schema) -> list[dict]:
    out = []
    for raw in root.section("uidgid"):
        checked = check_section(raw, "uidgid", schema)
        if checked.values["uid"] is None and checked.values["gid"] is None:
            raise ConfigError(raw.file, raw.line, "uidgid", "uidgid section needs 'uid' or 'gid'")
        out.append(dict(checked.values))
    return out


def _build_services(root: RawSection, schema: Schema, context: SectionContext) -> dict[str, dict]:
    """Every declared service section, checked key by key and then by its plugin's ``check``."""
    out: dict[str, dict] = {}
    for name, section in schema.services.items():
        given = bool(root.section(name))
        checked = check_section(_single(root, name), name, schema, given=given)
        values = dict(checked.values)
        if section.check is not None:
            try:
                values = section.check(checked, context)
            except ConfigError:
                raise
            except Exception as exc:  # a plugin's own failure still names the section and the plugin
                raise ConfigError(root.file, checked.raw.line, name,
                                  f"the check of {section.origin} failed: {type(exc).__name__}: {exc}") from exc
            if not isinstance(values, dict):
                raise ConfigError(root.file, checked.raw.line, name,
                                  f"the check of {section.origin} returned {type(values).__name__}, not a dict")
        out[name] = values
    return out


def validate_tree(root: RawSection, source: str = "", iface: str = "", schema: Schema | None = None) -> Config:
    """Check a parser's raw tree against the schema and return the validated Config.

    ``schema`` defaults to the executive's sections plus those of every
    installed service plugin not blocked by ``OPENAIS_BLOCK_SERVICES``.
    Raises ConfigError (file, line, dotted key, message, suggestion) on the
    first problem found.
    """
    if schema is None:
        schema = current_schema()
    if root.keys:
        first = root.keys[0]
        raise ConfigError(root.file, first.line, first.name, "key outside any section")
    _check_layout(root, "", "", schema)
    totem_raw = root.section("totem")
    if not totem_raw:
        raise ConfigError(root.file, 0, "totem", "missing required section 'totem { }'")
    totem = check_section(totem_raw[0], "totem", schema)
    totem_values, totem_config = _build_totem(totem)
    interfaces = _build_interfaces(totem, schema)
    logging, subsystems = _build_logging(root, schema)
    context = SectionContext(file=root.file, totem=totem_values, interfaces=interfaces)
    return Config(
        totem=totem_values,
        totem_config=totem_config,
        interfaces=interfaces,
        logging=logging,
        logger_subsys=subsystems,
        aisexec=dict(check_section(_single(root, "aisexec"), "aisexec", schema).values),
        uidgid=_build_uidgid(root, schema),
        services=_build_services(root, schema, context),
        present=frozenset(name for name, rule in schema.rules.items() if rule.parent == "" and root.section(name)),
        source=source or root.file,
        iface=iface,
    )
