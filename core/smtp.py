"""The SMTP transport: Django's SMTP backend with pipelining (RFC 2920).

Where the server offers PIPELINING, MAIL FROM, every RCPT TO and DATA go out in one write and
their replies are read together: two round trips per mail instead of four (bench/send.py;
over a network to a relay, half the wait per mail). Replies are judged exactly as smtplib
judges them one by one, with the same exceptions (SMTPSenderRefused, SMTPRecipientsRefused,
SMTPDataError; a 421 closes the connection, any other refusal resets the transaction), so
campaigns.sending classifies failures the same way. Without PIPELINING, or with SMTPUTF8,
smtplib sends as it always does.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Sequence
from typing import Any

from django.core.mail.backends.smtp import EmailBackend

_LINE_START_DOT = re.compile(rb"(?m)^\.")
_CRLF = b"\r\n"


class _Pipelining:
    """sendmail with RFC 2920 pipelining, mixed into smtplib.SMTP and SMTP_SSL."""

    def sendmail(
        self,
        from_addr: str,
        to_addrs: str | Sequence[str],
        msg: Any,
        mail_options: Sequence[str] = (),
        rcpt_options: Sequence[str] = (),
    ) -> dict[str, tuple[int, bytes]]:
        smtp: Any = self
        smtp.ehlo_or_helo_if_needed()
        if (
            not (smtp.does_esmtp and smtp.has_extn("pipelining"))
            or isinstance(msg, str)
            or any(option.lower() == "smtputf8" for option in mail_options)
        ):
            return super().sendmail(  # type: ignore[misc]
                from_addr, to_addrs, msg, mail_options, rcpt_options
            )
        recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        options = list(mail_options)
        if smtp.has_extn("size"):
            options.insert(0, f"size={len(msg)}")
        mail_line = f"mail FROM:{smtplib.quoteaddr(from_addr)}"
        if options:
            mail_line += " " + " ".join(options)
        rcpt_suffix = (" " + " ".join(rcpt_options)) if rcpt_options else ""
        lines = [mail_line]
        lines += [f"rcpt TO:{smtplib.quoteaddr(each)}{rcpt_suffix}" for each in recipients]
        lines.append("data")
        smtp.send("".join(f"{line}\r\n" for line in lines))

        code, reply = smtp.getreply()  # MAIL
        if code == 421:
            smtp.close()
            raise smtplib.SMTPSenderRefused(code, reply, from_addr)
        sender_refused = (code, reply) if code != 250 else None
        refused: dict[str, tuple[int, bytes]] = {}
        for each in recipients:  # RCPT, one reply each
            code, reply = smtp.getreply()
            if code not in (250, 251):
                refused[each] = (code, reply)
            if code == 421:
                smtp.close()
                raise smtplib.SMTPRecipientsRefused(refused)
        code, reply = smtp.getreply()  # DATA
        if code == 421:
            smtp.close()
        if code == 354 and (sender_refused or len(refused) == len(recipients)):
            # A server must refuse DATA without a valid sender and recipient (RFC 2920 3.1);
            # one that does not gets an empty mail ended at once, which the reset discards.
            smtp.send(b"." + _CRLF)
            smtp.getreply()
            code = 0
        if code != 354:
            if code != 421:
                smtp._rset()
            if sender_refused:
                raise smtplib.SMTPSenderRefused(*sender_refused, from_addr)
            if len(refused) == len(recipients):
                raise smtplib.SMTPRecipientsRefused(refused)
            raise smtplib.SMTPDataError(code, reply)

        body = _LINE_START_DOT.sub(b"..", msg)
        if not body.endswith(_CRLF):
            body += _CRLF
        smtp.send(body + b"." + _CRLF)
        code, reply = smtp.getreply()
        if code != 250:
            if code == 421:
                smtp.close()
            else:
                smtp._rset()
            raise smtplib.SMTPDataError(code, reply)
        return refused


class PipeliningSMTP(_Pipelining, smtplib.SMTP):
    pass


class PipeliningSMTP_SSL(_Pipelining, smtplib.SMTP_SSL):
    pass


class SmtpEmailBackend(EmailBackend):
    """Django's SMTP backend with pipelining (see the module's docstring). Configured by
    EMAIL_URL=smtp://, smtp+tls:// and smtps://."""

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return PipeliningSMTP_SSL if self.use_ssl else PipeliningSMTP


__all__ = ["PipeliningSMTP", "PipeliningSMTP_SSL", "SmtpEmailBackend"]
