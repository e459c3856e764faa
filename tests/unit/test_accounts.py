import base64
import io
import json
import logging
import os
import traceback
from pathlib import Path

import pytest

from checks.core.accounts import (
    REDACTED,
    Account,
    Accounts,
    Redactor,
    imap_quoted,
    login_blobs,
    plain_blob,
    split_hostport,
)
from checks.core.errors import InputError

PASSWORD = "S3cret-Passw0rd"
TRICKY = 'back\\slash "quoted" pass'  # needs escaping in IMAP, JSON and repr
UNICODE = "pässwörd-Ключ-密码"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "accounts.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return str(path)


GOOD_TOML = f"""
[accounts.work]
address = "probe@example.com"
password = "{PASSWORD}"

[accounts.Lab]
address = "test@lab.example"
username = "test"
password = "another-secret"
smtp = "127.1.0.25:587"
imap = "[::1]:993"
"""


def account(**changes: str) -> Account:
    values = {"name": "work", "address": "probe@example.com", "password": PASSWORD}
    values.update(changes)
    return Account(**values)  # type: ignore[arg-type]


def assert_hidden(exc: BaseException, *secrets: str) -> None:
    """Neither the exception's text nor its whole traceback (chained ones too) shows a secret."""
    rendered = "".join(traceback.format_exception(exc))
    for secret in secrets:
        assert secret not in str(exc)
        assert secret not in repr(exc)
        assert secret not in rendered


# -- Account ---------------------------------------------------------------------------------


def test_account_defaults_username_to_address_and_lowercases_the_name() -> None:
    a = account(name="Work")
    assert a.name == "work"
    assert a.username == "probe@example.com"
    assert a.smtp is None and a.imap is None
    assert a.domain.ascii == "example.com"


def test_account_repr_and_str_never_show_the_password() -> None:
    a = account(username="probe", smtp="smtp.example.com:587")
    for text in (repr(a), str(a), f"{a}", f"{a!r}", repr([a]), repr(Accounts([a]))):
        assert PASSWORD not in text
    assert "password=<hidden>" in repr(a)
    assert "probe@example.com" in str(a)


@pytest.mark.parametrize(
    ("changes", "key", "complaint"),
    [
        ({"name": "bad name"}, "name", "1 to 32"),
        ({"name": "x" * 33}, "name", "1 to 32"),
        ({"name": ""}, "name", "1 to 32"),
        ({"address": "not-an-address"}, "address", "not an email address"),
        ({"address": "@example.com"}, "address", "not an email address"),
        ({"address": "probe@localhost"}, "address", "single label"),
        ({"password": ""}, "password", "missing"),
        ({"password": "Short1!"}, "password", "shorter than 8"),
        ({"password": "x"}, "password", "redact"),
        ({"password": "new\nline-password"}, "password", "control"),
        ({"password": "nul\0-in-password"}, "password", "control"),
        ({"username": "us\rer"}, "username", "control"),
        ({"smtp": "smtp.example.com"}, "smtp", "HOST:PORT"),
        ({"smtp": "smtp.example.com:0"}, "smtp", "1 to 65535"),
        ({"imap": "::1:993"}, "imap", "HOST:PORT"),
        ({"imap": "bad host!:993"}, "imap", "host name"),
    ],
)
def test_bad_profiles_are_refused_naming_profile_and_key(
    changes: dict[str, str], key: str, complaint: str
) -> None:
    with pytest.raises(InputError, match=complaint) as info:
        account(**changes)
    assert "test account" in str(info.value)
    assert f" {key} " in str(info.value)
    tried = changes.get("password", "")
    assert_hidden(info.value, PASSWORD, *([tried] if len(tried) >= 4 else []))


def test_host_and_port_forms() -> None:
    assert split_hostport("smtp.example.com:587") == ("smtp.example.com", 587)
    assert split_hostport("mail:25") == ("mail", 25)
    assert split_hostport("127.1.0.25:465") == ("127.1.0.25", 465)
    assert split_hostport("[2001:db8::1]:993") == ("2001:db8::1", 993)
    for bad in ("[2001:db8::1]", "[nonsense]:1", "host:", ":25", "host:99999", "h_st:25"):
        with pytest.raises(InputError):
            split_hostport(bad)


# -- the file ----------------------------------------------------------------------------------


def test_file_with_mode_600_loads(tmp_path: Path) -> None:
    accounts = Accounts.from_file(write(tmp_path, GOOD_TOML))
    assert list(accounts) == ["lab", "work"]
    assert len(accounts) == 2 and "LAB" in accounts and "other" not in accounts
    lab = accounts.get("lab")
    assert (lab.address, lab.username, lab.password) == (
        "test@lab.example",
        "test",
        "another-secret",
    )
    assert (lab.smtp, lab.imap) == ("127.1.0.25:587", "[::1]:993")
    work = accounts.get("WORK")
    assert work.username == work.address == "probe@example.com"
    assert work.password == PASSWORD
    assert accounts["work"] is work
    assert dict(accounts.items()) == {"lab": lab, "work": work}


@pytest.mark.parametrize(("mode", "shown"), [(0o644, "0644"), (0o640, "0640"), (0o602, "0602")])
def test_file_others_can_touch_is_refused_naming_the_mode(
    tmp_path: Path, mode: int, shown: str
) -> None:
    path = write(tmp_path, GOOD_TOML, mode)
    with pytest.raises(InputError, match=f"mode {shown}") as info:
        Accounts.from_file(path)
    assert path in str(info.value) and "chmod 600" in str(info.value)
    assert_hidden(info.value, PASSWORD)


def test_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a regular file"):
        Accounts.from_file(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(InputError, match="not a regular file"):  # and does not block
        Accounts.from_file(str(fifo))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        Accounts.from_file(str(tmp_path / "nope.toml"))


def test_file_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD_TOML)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(InputError, match="owned by uid"):
        Accounts.from_file(path)


def test_symlink_is_judged_by_the_file_it_leads_to(tmp_path: Path) -> None:
    link = tmp_path / "link.toml"
    link.symlink_to(write(tmp_path, GOOD_TOML))
    assert len(Accounts.from_file(str(link))) == 2


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[accounts.work]\naddress = "probe@example.com"\n', "'work': password is missing"),
        (f'[accounts.work]\npassword = "{PASSWORD}"\n', "'work': address is missing"),
        (
            f'[accounts."bad name"]\naddress = "a@example.com"\npassword = "{PASSWORD}"\n',
            "'bad name': name must be",
        ),
        (
            f'[accounts.work]\naddress = "a@example.com"\npassword = "{PASSWORD}"\npasswd = "x"\n',
            "'work': 'passwd' is not a test account setting",
        ),
        (
            f'[accounts.work]\naddress = "nobody"\npassword = "{PASSWORD}"\n',
            "'work': address 'nobody' is not an email address",
        ),
        (
            f'[accounts.work]\naddress = "a@example.com"\npassword = "{PASSWORD}"\nsmtp = "x"\n',
            "'work': smtp must be HOST:PORT",
        ),
        (
            '[accounts.work]\naddress = "a@example.com"\npassword = "Short1"\n',
            "'work': password is shorter than 8 characters",
        ),
        (
            '[accounts.work]\naddress = "a@example.com"\npassword = 12345678901\n',
            "'work': password must be a string",
        ),
        (
            f'[accounts.A]\naddress = "a@example.com"\npassword = "{PASSWORD}"\n'
            f'[accounts.a]\naddress = "a@example.com"\npassword = "{PASSWORD}"\n',
            "defined twice",
        ),
        (f'[account.work]\npassword = "{PASSWORD}"\n', "unknown top-level key 'account'"),
        ('accounts = "x"\n', "must be tables"),
        ('[accounts]\nwork = "x"\n', "must be a table"),
    ],
)
def test_file_problems_name_the_path_profile_and_key(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError, match=complaint) as info:
        Accounts.from_file(path)
    assert path in str(info.value)
    assert_hidden(info.value, PASSWORD, "Short1", "12345678901")


def test_toml_syntax_error_gives_the_position_not_the_text(tmp_path: Path) -> None:
    path = write(tmp_path, '[accounts.work]\naddress = "a@example.com"\npassword = "abc\x01efgh"\n')
    with pytest.raises(InputError, match=r"not valid TOML \(at line 3, column \d+\)") as info:
        Accounts.from_file(path)
    assert_hidden(info.value, "abc", "efgh")


def test_empty_file_has_no_accounts(tmp_path: Path) -> None:
    assert len(Accounts.from_file(write(tmp_path, ""))) == 0


# -- the environment ---------------------------------------------------------------------------


def test_environment_profiles() -> None:
    accounts = Accounts.from_env(
        {
            "MAILCHECK_ACCOUNT_WORK_ADDRESS": " probe@example.com ",
            "MAILCHECK_ACCOUNT_WORK_PASSWORD": f" {PASSWORD}",  # passwords are taken as given
            "MAILCHECK_ACCOUNT_MY_BOX_ADDRESS": "box@example.org",
            "MAILCHECK_ACCOUNT_MY_BOX_USERNAME": "box",
            "MAILCHECK_ACCOUNT_MY_BOX_PASSWORD": "another-secret",
            "MAILCHECK_ACCOUNT_MY_BOX_SMTP": "smtp.example.org:465",
            "MAILCHECK_ACCOUNT_MY_BOX_IMAP": "",  # empty: unset
            "MAILCHECK_ACCOUNTS_FILE": "/not/ours",
            "HOME": "/root",
        }
    )
    assert list(accounts) == ["my_box", "work"]
    work, box = accounts.get("work"), accounts.get("my_box")
    assert (work.address, work.username, work.password) == (
        "probe@example.com",
        "probe@example.com",
        f" {PASSWORD}",
    )
    assert (box.username, box.smtp, box.imap) == ("box", "smtp.example.org:465", None)


def test_no_environment_no_accounts() -> None:
    assert len(Accounts.from_env({"PATH": "/bin"})) == 0


P = "MAILCHECK_ACCOUNT_"


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({f"{P}WORK_ADDRESS": "a@example.com"}, f"{P}WORK_PASSWORD is not set"),
        ({f"{P}WORK_PASSWORD": PASSWORD}, f"{P}WORK_ADDRESS is not set"),
        ({f"{P}WORK_PASSWRD": PASSWORD}, f"{P}WORK_PASSWRD is not a test account setting"),
        ({f"{P}PASSWORD": PASSWORD}, f"{P}PASSWORD is not a test account setting"),
        (
            {f"{P}WORK_ADDRESS": "a@example.com", f"{P}WORK_PASSWORD": "Short1"},
            f"{P}WORK_PASSWORD is shorter",
        ),
        (
            {
                f"{P}WORK_ADDRESS": "a@example.com",
                f"{P}WORK_PASSWORD": PASSWORD,
                f"{P}WORK_IMAP": "imap.example.com",
            },
            f"{P}WORK_IMAP must be HOST:PORT",
        ),
        (
            {f"{P}BAD!_ADDRESS": "a@example.com", f"{P}BAD!_PASSWORD": PASSWORD},
            rf"the name in {P}BAD!_\*: must be",
        ),
        ({f"{P}WORK_PASSWORD": PASSWORD, f"{P}work_PASSWORD": PASSWORD}, "set twice"),
    ],
)
def test_environment_problems_name_the_variable(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(InputError, match=complaint) as info:
        Accounts.from_env(env)
    assert_hidden(info.value, PASSWORD, "Short1")


def test_environment_wins_over_the_file_profile_by_profile(tmp_path: Path) -> None:
    from_file = Accounts.from_file(write(tmp_path, GOOD_TOML))
    from_env = Accounts.from_env(
        {
            "MAILCHECK_ACCOUNT_LAB_ADDRESS": "other@lab.example",
            "MAILCHECK_ACCOUNT_LAB_PASSWORD": "env-password",
            "MAILCHECK_ACCOUNT_EXTRA_ADDRESS": "extra@example.com",
            "MAILCHECK_ACCOUNT_EXTRA_PASSWORD": "extra-password",
        }
    )
    merged = from_file.merged(from_env)
    assert list(merged) == ["extra", "lab", "work"]
    lab = merged.get("lab")
    # replaced whole: the file's username and servers do not leak into the env's profile
    assert (lab.address, lab.username, lab.password, lab.smtp) == (
        "other@lab.example",
        "other@lab.example",
        "env-password",
        None,
    )
    assert merged.get("work") == from_file.get("work")
    assert from_env.merged(from_file).get("lab") == from_file.get("lab")
    assert from_file.merged(Accounts()) == from_file


# -- get ---------------------------------------------------------------------------------------


def test_unknown_name_lists_the_names_not_the_secrets(tmp_path: Path) -> None:
    accounts = Accounts.from_file(write(tmp_path, GOOD_TOML))
    with pytest.raises(InputError) as info:
        accounts.get("home")
    assert str(info.value) == "no test account named 'home' (known: lab, work)"
    assert_hidden(info.value, PASSWORD, "another-secret", "probe@example.com")
    with pytest.raises(InputError, match=r"named 'home' \(none are configured\)"):
        Accounts().get("home")
    with pytest.raises(KeyError):
        accounts["home"]


# -- what clients send, and the redactor ----------------------------------------------------------


def test_blobs_are_what_clients_send() -> None:
    assert base64.b64decode(plain_blob("user", PASSWORD)) == f"\0user\0{PASSWORD}".encode()
    user64, pass64 = login_blobs("user", PASSWORD)
    assert base64.b64decode(user64) == b"user"
    assert base64.b64decode(pass64) == PASSWORD.encode()
    assert imap_quoted(TRICKY) == '"back\\\\slash \\"quoted\\" pass"'


@pytest.mark.parametrize("password", [PASSWORD, TRICKY, UNICODE])
def test_every_form_of_the_password_is_redacted(password: str) -> None:
    a = account(username="probe", password=password)
    redact = Redactor([a])
    user = a.username
    blobs = [
        password,
        imap_quoted(password),
        plain_blob(user, password),
        plain_blob(user, password).rstrip("="),
        base64.b64encode(f"{user}\0{user}\0{password}".encode()).decode(),
        *login_blobs(user, password),
        base64.b64encode(password.encode()).decode().rstrip("="),
        json.dumps(password)[1:-1],
        repr(password)[1:-1],
    ]
    for blob in blobs:
        assert blob in redact.forms()
        assert redact(blob) == REDACTED
        assert redact(f"C: AUTH PLAIN {blob}\r\n") == f"C: AUTH PLAIN {REDACTED}\r\n"
    transcript = "\n".join(
        [
            f"C: AUTH PLAIN {plain_blob(user, password)}",
            "S: 334 VXNlcm5hbWU6",
            f"C: {login_blobs(user, password)[1]}",
            f"C: a1 LOGIN {imap_quoted(user)} {imap_quoted(password)}",
            f"C: PASS {password}",
            f"log: {json.dumps({'password': password})}",
            f"log: {password!r}",
        ]
    )
    out = redact(transcript)
    assert all(form not in out for form in redact.forms())
    assert out.count(REDACTED) == 6
    assert "S: 334 VXNlcm5hbWU6" in out and '"probe"' in out


def test_non_ascii_password_base64_forms_are_utf8() -> None:
    redact = Redactor([("user", UNICODE)])
    utf8 = base64.b64encode(UNICODE.encode("utf-8")).decode()
    assert utf8 in redact.forms()
    assert base64.b64encode(f"\0user\0{UNICODE}".encode()).decode() in redact.forms()
    assert redact(f"x {utf8} y") == f"x {REDACTED} y"
    assert json.dumps(UNICODE)[1:-1].startswith("p\\u00e4")  # the ASCII-escaped JSON form
    assert redact(json.dumps({"p": UNICODE})) == '{"p": "' + REDACTED + '"}'


def test_redaction_is_case_sensitive_and_leaves_other_text() -> None:
    redact = Redactor([PASSWORD])
    assert redact(PASSWORD.upper()) == PASSWORD.upper()
    assert redact("nothing secret here") == "nothing secret here"
    assert redact("") == ""
    assert Redactor([])("any text") == "any text"
    assert not Redactor([]) and redact
    assert PASSWORD not in repr(redact)


def test_overlapping_forms_leave_no_fragment() -> None:
    redact = Redactor(["abcdefgh", "efghijkl"])
    assert redact("xxabcdefghijklyy") == f"xx{REDACTED}yy"
    assert redact("abcdefgh abcdefgh") == f"{REDACTED} {REDACTED}"


def test_deep_redaction_of_nested_structures() -> None:
    redact = Accounts([account(username="probe")]).secrets()
    blob = plain_blob("probe", PASSWORD)
    report = {
        "findings": [{"evidence": (f"C: AUTH PLAIN {blob}", 3), "ok": True}],
        "facts": {PASSWORD: [None, 1.5, {"deeper": f"PASS {PASSWORD}"}]},
    }
    cleaned = redact.deep(report)
    assert cleaned == {
        "findings": [{"evidence": (f"C: AUTH PLAIN {REDACTED}", 3), "ok": True}],
        "facts": {REDACTED: [None, 1.5, {"deeper": f"PASS {REDACTED}"}]},
    }
    text = json.dumps(cleaned)
    assert PASSWORD not in text and blob not in text
    assert report["facts"][PASSWORD][2]["deeper"].endswith(PASSWORD)  # a copy, not in place


def test_accounts_secrets_cover_every_profile(tmp_path: Path) -> None:
    redact = Accounts.from_file(write(tmp_path, GOOD_TOML)).secrets()
    assert redact(f"{PASSWORD} another-secret") == f"{REDACTED} {REDACTED}"
    assert redact(plain_blob("test", "another-secret")) == REDACTED


# -- logging -----------------------------------------------------------------------------------


def test_log_lines_are_redacted_in_args_exceptions_and_extras() -> None:
    redact = Redactor([("probe", PASSWORD)])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(secret_extra)s"))
    handler.addFilter(redact.log_filter())
    logger = logging.getLogger("mailcheck.test_accounts")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("login %s with %r", "probe", PASSWORD, extra={"secret_extra": PASSWORD})
        logger.warning("sent %s", plain_blob("probe", PASSWORD), extra={"secret_extra": [PASSWORD]})
        try:
            raise RuntimeError(f"server refused password {PASSWORD}")
        except RuntimeError:
            logger.exception("auth failed for %s", PASSWORD, extra={"secret_extra": "-"})
        try:
            raise ValueError(f"quoted {imap_quoted(PASSWORD)}")
        except ValueError as exc:
            logger.error("oops", exc_info=exc, extra={"secret_extra": "-"})
        logger.info(
            "%(user)s / %(pw)s", {"user": "probe", "pw": PASSWORD}, extra={"secret_extra": "-"}
        )
    finally:
        logger.handlers.clear()
    out = stream.getvalue()
    assert PASSWORD not in out
    assert all(form not in out for form in redact.forms())
    assert f"login probe with '{REDACTED}' {REDACTED}" in out
    assert f"sent {REDACTED} ['{REDACTED}']" in out
    assert f"auth failed for {REDACTED}" in out
    assert f"RuntimeError: server refused password {REDACTED}" in out
    assert "Traceback (most recent call last)" in out
    assert f"ValueError: quoted {REDACTED}" in out
    assert f"probe / {REDACTED}" in out


def test_log_filter_is_idempotent_across_handlers() -> None:
    redact = Redactor([PASSWORD])
    streams = [io.StringIO(), io.StringIO()]
    logger = logging.getLogger("mailcheck.test_accounts.two")
    logger.propagate = False
    for stream in streams:
        handler = logging.StreamHandler(stream)
        handler.addFilter(redact.log_filter())
        logger.addHandler(handler)
    try:
        logger.error("%s and %d%%", PASSWORD, 50)
    finally:
        logger.handlers.clear()
    assert [s.getvalue() for s in streams] == [f"{REDACTED} and 50%\n"] * 2


# -- an account belongs to its own domains (issue 16) ---------------------------------


def test_an_account_serves_its_address_domain_and_the_listed_ones_only() -> None:
    account = Account(
        name="work", address="probe@Example.COM", password=PASSWORD, domains=("bücher.de",)
    )
    assert account.own_domains == ("example.com", "xn--bcher-kva.de")
    for domain in ("example.com", "EXAMPLE.com.", "bücher.de", "xn--bcher-kva.de"):
        assert account.serves(domain), domain
    for domain in ("evil.example", "mx.example.com", "example.com.evil.example", "com", "..."):
        assert not account.serves(domain), domain


def test_for_domain_refuses_naming_the_account_and_both_domains() -> None:
    accounts = Accounts([Account(name="work", address="probe@example.com", password=PASSWORD)])
    assert accounts.for_domain("WORK", "example.com").name == "work"
    with pytest.raises(InputError) as refused:
        accounts.for_domain("work", "evil.example")
    message = str(refused.value)
    assert "'work'" in message and "evil.example" in message and "example.com" in message
    assert PASSWORD not in message
    with pytest.raises(InputError, match="no test account named 'other'"):
        accounts.for_domain("other", "example.com")


def test_domains_and_tls_verify_from_a_file_and_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[accounts.lab]\naddress = "a@lab.test"\npassword = "{PASSWORD}"\n'
        'domains = ["Other.test", "third.test"]\ntls_verify = false\n',
    )
    (lab,) = Accounts.from_file(path).values()
    assert lab.domains == ("other.test", "third.test") and lab.tls_verify is False
    env = {
        "MAILCHECK_ACCOUNT_WORK_ADDRESS": "probe@example.com",
        "MAILCHECK_ACCOUNT_WORK_PASSWORD": PASSWORD,
        "MAILCHECK_ACCOUNT_WORK_DOMAINS": "example.net, example.org",
        "MAILCHECK_ACCOUNT_WORK_TLS_VERIFY": "false",
    }
    work = Accounts.from_env(env)["work"]
    assert work.domains == ("example.net", "example.org") and work.tls_verify is False
    assert Accounts.from_env({**env, "MAILCHECK_ACCOUNT_WORK_TLS_VERIFY": ""})["work"].tls_verify


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('domains = "example.net"', "domains must be a list"),
        ("domains = [1]", "domains must hold only strings"),
        ('domains = ["not a domain"]', "domains holds 'not a domain'"),
        ('tls_verify = "no"', "tls_verify must be true or false"),
    ],
)
def test_bad_domains_and_tls_verify_are_named(tmp_path: Path, table: str, complaint: str) -> None:
    path = write(
        tmp_path, f'[accounts.lab]\naddress = "a@lab.test"\npassword = "{PASSWORD}"\n{table}\n'
    )
    with pytest.raises(InputError, match=complaint):
        Accounts.from_file(path)


def test_a_bad_tls_verify_variable_is_named() -> None:
    env = {
        "MAILCHECK_ACCOUNT_WORK_ADDRESS": "probe@example.com",
        "MAILCHECK_ACCOUNT_WORK_PASSWORD": PASSWORD,
        "MAILCHECK_ACCOUNT_WORK_TLS_VERIFY": "maybe",
    }
    with pytest.raises(InputError, match="MAILCHECK_ACCOUNT_WORK_TLS_VERIFY must be true or false"):
        Accounts.from_env(env)
