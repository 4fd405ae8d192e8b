#!/usr/bin/env bash
# make-certs.sh DIR -- create a throwaway CA and a localhost server certificate
# signed by it, for the TLS mock API server.  Idempotent, quiet on success.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"

if [ -s "$dir/ca.pem" ] && [ -s "$dir/ca.key" ] && \
   [ -s "$dir/server.pem" ] && [ -s "$dir/server.key" ]; then
    exit 0
fi

tmp=$(mktemp -d "$dir/.certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log=$tmp/openssl.log
run() {
    if ! "$@" >>"$log" 2>&1; then
        echo "make-certs.sh: command failed: $*" >&2
        cat "$log" >&2
        exit 1
    fi
}

# EC P-256 keys
run openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key"
run openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/server.key"

cat >"$tmp/ca.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = claude-mock test CA
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF

cat >"$tmp/server.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[v3_srv]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
CNF

run openssl req -new -x509 -sha256 -days 2 -key "$tmp/ca.key" \
    -config "$tmp/ca.cnf" -out "$tmp/ca.pem"
run openssl req -new -sha256 -key "$tmp/server.key" \
    -config "$tmp/server.cnf" -out "$tmp/server.csr"
run openssl x509 -req -sha256 -days 2 -in "$tmp/server.csr" \
    -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
    -extfile "$tmp/server.cnf" -extensions v3_srv -out "$tmp/server.pem"

chmod 644 "$tmp/ca.pem" "$tmp/server.pem"
chmod 600 "$tmp/ca.key" "$tmp/server.key"
# keys go in first, certificates last, so a half-finished run is never
# mistaken for a complete one
for f in ca.key server.key ca.pem server.pem; do
    mv -f "$tmp/$f" "$dir/$f"
done
