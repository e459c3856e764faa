import pytest

from checks.core.errors import InputError
from checks.core.names import normalize_domain


@pytest.mark.parametrize(
    ("text", "ascii_name", "unicode_name"),
    [
        ("example.com", "example.com", "example.com"),
        ("Example.COM.", "example.com", "example.com"),
        ("  mail.Example.org  ", "mail.example.org", "mail.example.org"),
        ("user@Example.com", "example.com", "example.com"),
        ("first.last+tag@sub.example.net", "sub.example.net", "sub.example.net"),
        ('"odd@local"@example.com', "example.com", "example.com"),
        ("https://Mail.Example.com/owa/?x=1", "mail.example.com", "mail.example.com"),
        ("http://example.com:8080", "example.com", "example.com"),
        ("bücher.de", "xn--bcher-kva.de", "bücher.de"),
        ("BÜCHER.de", "xn--bcher-kva.de", "bücher.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de", "bücher.de"),
        ("用户@例子.测试", "xn--fsqu00a.xn--0zwm56d", "例子.测试"),
        ("a-b.c-d.example", "a-b.c-d.example", "a-b.c-d.example"),
    ],
)
def test_accepts_and_normalises(text: str, ascii_name: str, unicode_name: str) -> None:
    name = normalize_domain(text)
    assert (name.ascii, name.unicode) == (ascii_name, unicode_name)
    assert name.is_idn == (ascii_name != unicode_name)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "no domain"),
        ("   ", "no domain"),
        ("exa mple.com", "spaces"),
        ("localhost", "single label"),
        ("example..com", "empty label"),
        (".example.com", "empty label"),
        ("-bad.example.com", "not a valid domain"),
        ("bad-.example.com", "not a valid domain"),
        ("under_score.example.com", "not a valid domain"),
        ("a" * 64 + ".com", "not a valid domain"),
        (".".join(["abcdefghij"] * 25) + ".com", "253"),
        ("192.0.2.1", "IP address"),
        ("[2001:db8::1]", "IP address"),
        ("https://192.0.2.1/", "IP address"),
        ("user@", "nothing on one side"),
        ("@example.com", "nothing on one side"),
        ("example.com/path", "not a domain"),
        ("https:///nohost", "without a host"),
        ("exa<mple>.com", "not a valid domain"),
        ("x" * 5000, "at most 253"),
    ],
)
def test_rejects_with_a_clear_message(text: str, complaint: str) -> None:
    with pytest.raises(InputError) as info:
        normalize_domain(text)
    assert complaint in str(info.value)
    assert len(str(info.value)) < 300  # bounded, even for huge input
