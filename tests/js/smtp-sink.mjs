// An SMTP server that keeps nothing: it accepts messages on 127.0.0.1 at a free port
// and prints each one as a JSON line {"from", "to": […], "subject", "text", "html",
// "secure", "user"} on stdout, after a first line {"port": N, "ca": PEM or null}. Runs
// until its standard input closes. Usage:
//   node smtp-sink.mjs [--tls starttls|tls] [--auth USER:PASSWORD]
// Without options: no TLS, no authentication. With --tls, a certificate for 127.0.0.1
// and localhost, signed by a certificate authority made for this run (the "ca" of the
// first line, for the client to trust): `starttls` offers STARTTLS on the plain
// connection, `tls` speaks TLS from the first byte. With --auth, AUTH PLAIN or LOGIN
// with that user and password is required before MAIL FROM (and, as smtp-server does,
// only over TLS when --tls is given); a refused AUTH prints {"auth_failed": USER}.
// A connection that fails its TLS handshake prints {"tls_error": CODE} (smtp-server
// may report it twice).
import { parseArgs } from 'node:util';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';
import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';

const { values } = parseArgs({
  options: { tls: { type: 'string' }, auth: { type: 'string' } },
});
if (values.tls && !['starttls', 'tls'].includes(values.tls)) {
  throw new Error(`--tls ${values.tls}: starttls or tls`);
}
const [user, password] = values.auth ? values.auth.split(/:(.*)/s) : [];

// A certificate authority for this run, and the server's certificate signed by it.
function certificates() {
  const { pki, md } = forge;
  const make = (subject, issuer, publicKey, signingKey, extensions) => {
    const cert = pki.createCertificate();
    cert.publicKey = publicKey;
    cert.serialNumber = `0${forge.util.bytesToHex(forge.random.getBytesSync(8))}`;
    cert.validity.notBefore = new Date(Date.now() - 3600 * 1000);
    cert.validity.notAfter = new Date(Date.now() + 24 * 3600 * 1000);
    cert.setSubject([{ name: 'commonName', value: subject }]);
    cert.setIssuer([{ name: 'commonName', value: issuer }]);
    cert.setExtensions(extensions);
    cert.sign(signingKey, md.sha256.create());
    return cert;
  };
  // Keys from Node's own (native) generator: forge's JavaScript one takes seconds of
  // CPU, far longer on a loaded machine.
  const keyPair = () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      publicKeyEncoding: { type: 'spki', format: 'pem' },
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
    });
    return { publicKey: pki.publicKeyFromPem(publicKey), privateKey: pki.privateKeyFromPem(privateKey) };
  };
  const caKeys = keyPair();
  const ca = make('keyward test SMTP CA', 'keyward test SMTP CA', caKeys.publicKey, caKeys.privateKey, [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]);
  const keys = keyPair();
  const server = make('localhost', 'keyward test SMTP CA', keys.publicKey, caKeys.privateKey, [
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
  ]);
  return {
    ca: pki.certificateToPem(ca),
    cert: pki.certificateToPem(server),
    key: pki.privateKeyToPem(keys.privateKey),
  };
}

const tls = values.tls ? certificates() : null;
const server = new SMTPServer({
  secure: values.tls === 'tls',
  ...(tls ? { key: tls.key, cert: tls.cert } : {}),
  disabledCommands: [...(tls ? [] : ['STARTTLS']), ...(user === undefined ? ['AUTH'] : [])],
  authOptional: user === undefined,
  authMethods: ['PLAIN', 'LOGIN'],
  logger: false,
  onAuth(auth, session, callback) {
    if (auth.username === user && auth.password === password) {
      callback(null, { user: auth.username });
    } else {
      console.log(JSON.stringify({ auth_failed: auth.username }));
      callback(new Error('Invalid username or password'));
    }
  },
  onData(stream, session, callback) {
    simpleParser(stream)
      .then((mail) => {
        console.log(JSON.stringify({
          from: session.envelope.mailFrom && session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          subject: mail.subject,
          text: mail.text,
          html: mail.html || null,
          secure: Boolean(session.secure),
          user: session.user || null,
        }));
        callback();
      })
      .catch(callback);
  },
});
server.on('error', (err) => {
  if (err && err.meta && err.meta.tlsProtocol !== undefined) {
    console.log(JSON.stringify({ tls_error: err.code || String(err.message) }));
  }
});
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.server.address().port, ca: tls ? tls.ca : null }));
});
process.stdin.resume();
process.stdin.on('end', () => server.close(() => process.exit(0)));
