#!/bin/sh
# Makes the certificates compose.tls.yaml runs with, once, into DIR: a CA, the
# edge's server certificate (for edge, localhost and 127.0.0.1), a client
# certificate whose Common Name is `root`, and the certificate cairn's services
# show each other (internal TLS; one for all, naming every service's host), and
# root.password, the password compose.tls.yaml's auth step gives etcd's root
# user (the certificate needs none; a client of the JSON gateway, which cannot
# use certificates as users, logs in with it). Keeps what DIR already holds, so
# a restart does not change them. Development certificates: the keys are
# readable by the edge's user (uid 10001) and by whoever owns DIR.
#   make-certs.sh DIR
set -eu
dir="${1:?usage: make-certs.sh DIR}"
mkdir -p "$dir"
cd "$dir"
if [ ! -s root.password ]; then
    openssl rand -hex 16 >root.password
    chmod 0644 root.password
fi
if [ -s ca.crt ] && [ -s edge.crt ] && [ -s client.crt ] && [ -s internal.crt ]; then
    echo "certificates in $dir: present"
    exit 0
fi
days=825
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
# signed NAME CN EXTENSIONS: NAME.key and NAME.crt, signed by the CA.
signed() {
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days "$days" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
key ca.key
openssl req -x509 -new -key ca.key -subj "/CN=cairn compose CA" -days "$days" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt
signed edge edge "subjectAltName=DNS:edge,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
signed client root "extendedKeyUsage=clientAuth"
hosts="DNS:log-1,DNS:log-2,DNS:log-3,DNS:log-4,DNS:log-5,DNS:mvcc,DNS:mvcc-1,DNS:mvcc-2,DNS:mvcc-3"
hosts="$hosts,DNS:watch,DNS:lease-1,DNS:lease-2,DNS:edge,DNS:localhost,IP:127.0.0.1"
signed internal cairn "subjectAltName=$hosts
extendedKeyUsage=serverAuth,clientAuth"
rm -f ca.srl
chown 10001 edge.key internal.key 2>/dev/null || true
chmod 0644 ca.crt edge.crt client.crt client.key internal.crt
chmod 0600 ca.key edge.key internal.key
echo "certificates in $dir: made (CA, edge, client CN=root, internal)"
