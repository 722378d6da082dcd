// An SMTP server that keeps nothing: it accepts every message (no TLS, no
// authentication, on 127.0.0.1 at a free port) and prints each one as a JSON line
// {"from", "to": […], "subject", "text", "html"} on stdout, after a first line
// {"port": N}. Runs until its standard input closes. Usage: node smtp-sink.mjs
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';

const server = new SMTPServer({
  secure: false,
  disabledCommands: ['STARTTLS', 'AUTH'],
  authOptional: true,
  logger: false,
  onData(stream, session, callback) {
    simpleParser(stream)
      .then((mail) => {
        console.log(JSON.stringify({
          from: session.envelope.mailFrom && session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          subject: mail.subject,
          text: mail.text,
          html: mail.html || null,
        }));
        callback();
      })
      .catch(callback);
  },
});
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.server.address().port }));
});
process.stdin.resume();
process.stdin.on('end', () => server.close(() => process.exit(0)));
