//! A small PKI on rcgen: the CAs and certificates of `leasehold certs`, and
//! of the integration tests, which make theirs in a tempdir with the same
//! code so that what the tests prove holds for what users deploy.
//!
//! What it makes (the trust model of docs/design/security.md §3):
//! - a CA ([`Ca::new`]): a self-signed ECDSA P-256 certificate, subject
//!   `CN=<name>` only, basic constraints `CA, pathlen 0` (it signs leaves,
//!   never another CA), key usages `keyCertSign` and `cRLSign`;
//! - node certificates ([`Ca::issue_node`]): EKU `serverAuth` and
//!   `clientAuth`, because a node serves its port with its certificate and
//!   presents the same one to its peers, whose verifier checks `clientAuth`;
//!   SANs = the names given plus `127.0.0.1` and `localhost`;
//! - client certificates ([`Ca::issue_client`]): EKU `clientAuth`, CN = the
//!   user, one O per group (Kubernetes' convention).
//!
//! Every certificate gets a new key and a random serial number: rcgen's
//! default serial is a hash of the public key, so re-issuing with one key
//! would repeat a serial. Validity is explicit ([`Validity`]); rcgen's
//! default is 1975 to 4096.

use super::subject::der_next;
use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::fmt;
use std::sync::Arc;
use time::OffsetDateTime;

/// The most groups (O attributes) [`Ca::issue_client`] writes into one
/// certificate. rcgen's `DistinguishedName` is a map holding one value per
/// attribute type: the first group is `DnType::OrganizationName`, the second
/// a `CustomDnType` with the same OID, and there is no third key for it.
pub const MAX_CERT_GROUPS: usize = 2;

/// OID 2.5.4.10, organizationName: the same attribute as
/// `DnType::OrganizationName`, spelled so that the map takes a second one.
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

/// Why a CA or certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Bad input (a name, a group, a SAN): the caller's to fix.
    #[error("{0}")]
    Invalid(String),
    /// The CA files cannot be used to issue certificates.
    #[error("{0}")]
    Ca(String),
    /// rcgen refused the parameters or failed to sign.
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before this time.
    pub not_before: OffsetDateTime,
    /// Not valid after this time.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// How far `not_before` lies in the past. The chaos suite runs nodes
    /// with clocks ±30 s off, and rustls checks validity against the local
    /// wall clock: a certificate valid from "now" would be "not valid yet"
    /// on a node whose clock is behind the one that issued it.
    pub const BACKDATE: time::Duration = time::Duration::days(1);

    /// Valid from a day ago ([`Self::BACKDATE`]) until `days` days from now.
    pub fn days(days: u32) -> Validity {
        Self::lasting(time::Duration::days(days.into()))
    }

    /// Valid from a day ago until `duration` from now: short-lived
    /// certificates for the expiry tests.
    pub fn lasting(duration: time::Duration) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Self::BACKDATE,
            not_after: now + duration,
        }
    }

    /// Refuses a period that ends before it starts, which rcgen would sign.
    fn check(&self) -> Result<(), PkiError> {
        if self.not_after <= self.not_before {
            return Err(PkiError::Invalid(format!(
                "the validity ends ({}) before it starts ({})",
                self.not_after, self.not_before
            )));
        }
        Ok(())
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Pem {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert: String,
    /// The PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
    pub key: String,
}

impl fmt::Debug for Pem {
    /// Leaves the private key out: debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pem")
            .field("cert", &self.cert)
            .field("key", &"[elided]")
            .finish()
    }
}

/// A CA that issues node and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for Ca {
    /// Leaves the private key out, as rcgen's `Issuer` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("issuer", &self.issuer)
            .field("cert", &self.cert_pem)
            .finish()
    }
}

impl Ca {
    /// A new self-signed CA with subject `CN=<common_name>` and a new key.
    pub fn new(common_name: &str, validity: Validity) -> Result<Ca, PkiError> {
        let common_name = attribute("CA common name", common_name)?;
        validity.check()?;
        let params = ca_params(ca_name(common_name), validity, Some(random_serial()?));
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA of `cert_pem` and `key_pem`, as [`Ca::new`] wrote them, to
    /// issue more certificates later (`leasehold certs issue`).
    ///
    /// rcgen can read a CA certificate only with its `x509-parser` feature
    /// (14 more crates). Instead, this reads the subject with webpki (which
    /// rustls brings) and rebuilds the issuer parameters [`Ca::new`] used:
    /// the same subject, key usages and key-identifier method. An issuer
    /// needs nothing else, because what a leaf takes from its CA is the
    /// subject (its issuer name, compared byte for byte in path building)
    /// and the key (its signature and authority key identifier).
    ///
    /// So it works for CAs this module made. Another CA is refused, not
    /// mis-used: a test certificate is issued and verified against
    /// `cert_pem` with rustls before this returns, which also catches a key
    /// that does not belong to the certificate and an expired CA. Issue
    /// from a foreign CA with openssl instead.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PkiError::Ca(format!("cannot read the CA certificate: {e}")))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| PkiError::Ca(format!("cannot read the CA key: {e}")))?;
        // webpki takes any certificate as a trust anchor, a leaf too: so
        // the test issue below would pass with a leaf, and the CA flag is
        // read here.
        if !is_ca_certificate(&cert_der) {
            return Err(PkiError::Ca(
                "the certificate is not a CA certificate (no basic constraints with cA true)"
                    .into(),
            ));
        }
        let subject = {
            let parsed = webpki::EndEntityCert::try_from(&cert_der)
                .map_err(|e| PkiError::Ca(format!("cannot parse the CA certificate: {e}")))?;
            distinguished_name(parsed.subject()).ok_or_else(|| {
                PkiError::Ca(
                    "the CA certificate's subject is not one `leasehold certs` writes \
                     (one attribute per RDN, UTF8/Printable/IA5 strings, no type twice); \
                     issue from this CA with openssl instead"
                        .into(),
                )
            })?
        };
        // The validity and serial are the CA certificate's own, never
        // written again: an issuer uses neither.
        let params = ca_params(subject, Validity::days(0), None);
        let ca = Ca {
            issuer: Issuer::new(params, key),
            cert_der: cert_der.into_owned(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        };
        ca.check_issues_verifiable_certificates()?;
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate, DER (for a rustls `RootCertStore`).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A node certificate: CN `common_name`, EKU `serverAuth` and
    /// `clientAuth`, SANs `sans` (IP literals become IP SANs, anything else
    /// must be a DNS name) plus `127.0.0.1` and `localhost`, so that a node
    /// is reachable by its health check and by a client on its own host.
    pub fn issue_node(
        &self,
        common_name: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<Pem, PkiError> {
        let mut names: Vec<String> = Vec::new();
        for san in sans
            .iter()
            .map(String::as_str)
            .chain(["127.0.0.1", "localhost"])
        {
            if ServerName::try_from(san).is_err() {
                return Err(PkiError::Invalid(format!(
                    "{san:?} is neither an IP address nor a DNS name"
                )));
            }
            if !names.iter().any(|n| n.eq_ignore_ascii_case(san)) {
                names.push(san.to_string());
            }
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, attribute("common name", common_name)?);
        self.issue(
            names,
            dn,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            validity,
        )
    }

    /// A client certificate: CN `user`, one O per group (at most
    /// [`MAX_CERT_GROUPS`]), EKU `clientAuth`, no SANs.
    pub fn issue_client(
        &self,
        user: &str,
        groups: &[String],
        validity: Validity,
    ) -> Result<Pem, PkiError> {
        if groups.len() > MAX_CERT_GROUPS {
            return Err(PkiError::Invalid(format!(
                "user {user:?} has {} groups, and a certificate from `leasehold certs` holds at \
                 most {MAX_CERT_GROUPS}; give the user a bearer token instead, or issue the \
                 certificate with openssl (-subj \"/CN={user}/O=group1/O=group2/O=group3\")",
                groups.len()
            )));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, attribute("user name", user)?);
        for (i, group) in groups.iter().enumerate() {
            let group = attribute("group", group)?;
            if groups[..i].iter().any(|g| g == group) {
                return Err(PkiError::Invalid(format!(
                    "group {group:?} is given twice for user {user:?}"
                )));
            }
            let ty = if i == 0 {
                DnType::OrganizationName
            } else {
                DnType::CustomDnType(ORGANIZATION_OID.to_vec())
            };
            dn.push(ty, group);
        }
        self.issue(
            Vec::new(),
            dn,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        )
    }

    /// Signs a leaf with a new key and a random serial.
    fn issue(
        &self,
        sans: Vec<String>,
        subject: DistinguishedName,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        validity: Validity,
    ) -> Result<Pem, PkiError> {
        validity.check()?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = subject;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// Issues a throwaway client certificate and verifies it against the
    /// CA certificate with rustls: the proof that [`Ca::from_pem`] rebuilt
    /// an issuer whose certificates chain to that CA.
    fn check_issues_verifiable_certificates(&self) -> Result<(), PkiError> {
        let minute = time::Duration::minutes(1);
        let now = OffsetDateTime::now_utc();
        let probe = self.issue_client(
            "leasehold-certs-probe",
            &[],
            Validity {
                not_before: now - minute,
                not_after: now + minute,
            },
        )?;
        let leaf = CertificateDer::from_pem_slice(probe.cert.as_bytes())
            .map_err(|e| PkiError::Ca(format!("cannot read a certificate just issued: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).map_err(|e| {
            PkiError::Ca(format!("the CA certificate is not usable as a root: {e}"))
        })?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| PkiError::Ca(format!("the CA certificate is not usable as a root: {e}")))?;
        verifier
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .map_err(|e| {
                PkiError::Ca(format!(
                    "a certificate issued with this CA key does not verify against the CA \
                     certificate ({e}): the key is not the certificate's, the CA has expired, \
                     or the CA was not made by `leasehold certs` (use openssl for that one)"
                ))
            })?;
        Ok(())
    }
}

/// 32 random bytes from the operating system's CSPRNG (ring's, through
/// rustls), hex: a bearer token for `--token-auth-file`.
pub fn random_token() -> Result<String, PkiError> {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The parameters of a CA certificate with subject `subject`, which
/// [`Ca::new`] signs and [`Ca::from_pem`] rebuilds: what matters to an
/// issuer (subject, key usages, key-identifier method) must be the same in
/// both.
fn ca_params(
    subject: DistinguishedName,
    validity: Validity,
    serial: Option<SerialNumber>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = serial;
    params
}

/// `CN=<common_name>`, the whole subject of a CA made here.
fn ca_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// `value` as a subject attribute: not empty, no control characters (they
/// would end up in logs, error messages and files).
fn attribute<'a>(what: &str, value: &'a str) -> Result<&'a str, PkiError> {
    if value.is_empty() {
        return Err(PkiError::Invalid(format!("the {what} is empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(PkiError::Invalid(format!(
            "the {what} {value:?} contains a control character"
        )));
    }
    Ok(value)
}

/// A random positive 16-byte serial. The top bit is cleared (DER integers
/// are signed) and the next one set, so every serial is 16 bytes long.
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Fills `buf` from ring's `SystemRandom`, reached through rustls's ring
/// provider so that ring needs no direct dependency.
fn fill_random(buf: &mut [u8]) -> Result<(), PkiError> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| PkiError::Random)
}

/// One attribute of a subject: its OID, its DER string tag and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameAttribute {
    oid: Vec<u64>,
    tag: u8,
    value: String,
}

/// DER tags of the strings rcgen writes for a subject.
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;

/// The attributes of a DER `Name` without its outer SEQUENCE (webpki's
/// `Cert::subject`), in order; `None` unless every RDN holds exactly one
/// attribute with a string value, as rcgen writes them.
fn name_attributes(mut name: &[u8]) -> Option<Vec<NameAttribute>> {
    let mut out = Vec::new();
    while !name.is_empty() {
        let (tag, rdn, rest) = der_next(name)?;
        name = rest;
        let (seq_tag, atv, after) = der_next(rdn)?;
        if tag != 0x31 || seq_tag != 0x30 || !after.is_empty() {
            return None;
        }
        let (oid_tag, oid, value) = der_next(atv)?;
        let (tag, value, after) = der_next(value)?;
        if oid_tag != 0x06 || !after.is_empty() {
            return None;
        }
        out.push(NameAttribute {
            oid: decode_oid(oid)?,
            tag,
            value: std::str::from_utf8(value).ok()?.to_string(),
        });
    }
    Some(out)
}

/// A subject as rcgen's `DistinguishedName`, encoding back to the same
/// bytes; `None` for one it cannot hold (an attribute type twice, a string
/// type rcgen does not write).
fn distinguished_name(subject: &[u8]) -> Option<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    for a in name_attributes(subject)? {
        let ty = DnType::from_oid(&a.oid);
        let value = match a.tag {
            TAG_UTF8_STRING => DnValue::Utf8String(a.value),
            TAG_PRINTABLE_STRING => {
                DnValue::PrintableString(PrintableString::try_from(a.value).ok()?)
            }
            TAG_IA5_STRING => DnValue::Ia5String(Ia5String::try_from(a.value).ok()?),
            _ => return None,
        };
        if dn.get(&ty).is_some() {
            return None;
        }
        dn.push(ty, value);
    }
    Some(dn)
}

/// Whether a certificate's basic constraints say `cA: TRUE` (Certificate,
/// tbsCertificate, `[3]` extensions, basicConstraints 2.5.29.19, its
/// SEQUENCE's BOOLEAN). False for anything it cannot read.
fn is_ca_certificate(cert: &[u8]) -> bool {
    const BASIC_CONSTRAINTS: [u64; 4] = [2, 5, 29, 19];
    let find = || -> Option<bool> {
        let (_, certificate, _) = der_next(cert)?;
        let (_, mut tbs, _) = der_next(certificate)?;
        // version, serial, signature, issuer, validity, subject, spki, then
        // the optional fields: [3] holds the extensions.
        while !tbs.is_empty() {
            let (tag, contents, rest) = der_next(tbs)?;
            tbs = rest;
            if tag != 0xa3 {
                continue;
            }
            let (_, mut extensions, _) = der_next(contents)?;
            while !extensions.is_empty() {
                let (_, extension, rest) = der_next(extensions)?;
                extensions = rest;
                let (_, oid, mut fields) = der_next(extension)?;
                if decode_oid(oid)? != BASIC_CONSTRAINTS {
                    continue;
                }
                let (mut tag, mut value, rest) = der_next(fields)?;
                if tag == 0x01 {
                    // `critical`, then the OCTET STRING.
                    fields = rest;
                    (tag, value, _) = der_next(fields)?;
                }
                if tag != 0x04 {
                    return None;
                }
                let (_, constraints, _) = der_next(value)?;
                let (tag, ca, _) = der_next(constraints)?;
                return Some(tag == 0x01 && ca == [0xff]);
            }
        }
        Some(false)
    };
    find().unwrap_or(false)
}

/// The arcs of a DER OBJECT IDENTIFIER's contents.
fn decode_oid(bytes: &[u8]) -> Option<Vec<u64>> {
    let mut arcs = Vec::new();
    let mut acc: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 != 0 {
            if i + 1 == bytes.len() {
                return None;
            }
            continue;
        }
        if arcs.is_empty() {
            let first = (acc / 40).min(2);
            arcs.push(first);
            arcs.push(acc - first * 40);
        } else {
            arcs.push(acc);
        }
        acc = 0;
    }
    (!arcs.is_empty()).then_some(arcs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::server::danger::ClientCertVerifier;
    use std::time::Duration;

    const OID_CN: [u64; 4] = [2, 5, 4, 3];

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate")
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca: &Ca) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).expect("CA as a root");
        Arc::new(roots)
    }

    fn client_verifier(ca: &Ca) -> Arc<dyn ClientCertVerifier> {
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .expect("client verifier")
    }

    fn server_verifier(ca: &Ca) -> Arc<rustls::client::WebPkiServerVerifier> {
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .expect("server verifier")
    }

    fn server_ok(ca: &Ca, cert: &str, name: &str) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_string()).expect("server name");
        server_verifier(ca)
            .verify_server_cert(&der(cert), &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn client_ok_at(ca: &Ca, cert: &str, at: OffsetDateTime) -> Result<(), rustls::Error> {
        let secs = u64::try_from(at.unix_timestamp()).expect("after 1970");
        client_verifier(ca)
            .verify_client_cert(
                &der(cert),
                &[],
                UnixTime::since_unix_epoch(Duration::from_secs(secs)),
            )
            .map(|_| ())
    }

    fn client_ok(ca: &Ca, cert: &str) -> Result<(), rustls::Error> {
        client_ok_at(ca, cert, OffsetDateTime::now_utc())
    }

    fn subject(cert: &str) -> Vec<(Vec<u64>, String)> {
        let der = der(cert);
        let parsed = webpki::EndEntityCert::try_from(&der).expect("parse");
        name_attributes(parsed.subject())
            .expect("subject")
            .into_iter()
            .map(|a| (a.oid, a.value))
            .collect()
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_client_with_two_groups_verifies_against_its_ca_only() {
        let ca = Ca::new("leasehold-client-ca", Validity::days(30)).unwrap();
        let other = Ca::new("other-ca", Validity::days(30)).unwrap();
        let alice = ca
            .issue_client(
                "alice",
                &groups(&["team-a", "leasehold:admins"]),
                Validity::days(1),
            )
            .unwrap();
        client_ok(&ca, &alice.cert).unwrap();
        let stranger = other
            .issue_client("alice", &groups(&["team-a"]), Validity::days(1))
            .unwrap();
        let refused = client_ok(&ca, &stranger.cert).unwrap_err();
        assert!(
            matches!(
                refused,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{refused:?}"
        );
        // CN = user, then one O per group, in order, both with the O OID.
        assert_eq!(
            subject(&alice.cert),
            vec![
                (OID_CN.to_vec(), "alice".to_string()),
                (ORGANIZATION_OID.to_vec(), "team-a".to_string()),
                (ORGANIZATION_OID.to_vec(), "leasehold:admins".to_string()),
            ]
        );
        // A client certificate cannot serve: no serverAuth EKU.
        assert!(server_ok(&ca, &alice.cert, "127.0.0.1").is_err());
        assert!(alice.key.contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn zero_one_or_two_groups_and_a_clear_error_for_more() {
        let ca = Ca::new("ca", Validity::days(1)).unwrap();
        for n in 0..=MAX_CERT_GROUPS {
            let g: Vec<String> = (0..n).map(|i| format!("g{i}")).collect();
            let pem = ca.issue_client("bob", &g, Validity::days(1)).unwrap();
            assert_eq!(subject(&pem.cert).len(), 1 + n);
            client_ok(&ca, &pem.cert).unwrap();
        }
        let err = ca
            .issue_client("bob", &groups(&["a", "b", "c"]), Validity::days(1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bearer token") && err.contains("openssl"),
            "{err}"
        );
        assert!(ca
            .issue_client("bob", &groups(&["a", "a"]), Validity::days(1))
            .is_err());
        assert!(ca.issue_client("", &[], Validity::days(1)).is_err());
        assert!(ca
            .issue_client("bob", &groups(&[""]), Validity::days(1))
            .is_err());
    }

    #[test]
    fn a_node_certificate_serves_its_names_and_is_a_client_too() {
        let ca = Ca::new("leasehold-ca", Validity::days(30)).unwrap();
        let node = ca
            .issue_node(
                "node-1",
                &groups(&["node1", "172.28.0.11", "localhost"]),
                Validity::days(1),
            )
            .unwrap();
        for name in ["127.0.0.1", "localhost", "node1", "172.28.0.11"] {
            server_ok(&ca, &node.cert, name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        assert!(server_ok(&ca, &node.cert, "172.28.0.12").is_err());
        assert!(server_ok(&ca, &node.cert, "node2").is_err());
        // Peers present it as a client certificate (clientAuth EKU).
        client_ok(&ca, &node.cert).unwrap();
        assert_eq!(
            subject(&node.cert),
            vec![(OID_CN.to_vec(), "node-1".to_string())]
        );
        // Another CA's verifier refuses it.
        let other = Ca::new("leasehold-ca", Validity::days(30)).unwrap();
        assert!(server_ok(&other, &node.cert, "127.0.0.1").is_err());
        let err = ca
            .issue_node("node-2", &groups(&["bad name"]), Validity::days(1))
            .unwrap_err();
        assert!(matches!(err, PkiError::Invalid(_)), "{err}");
    }

    #[test]
    fn validity_is_back_dated_a_day_and_ends_after_the_days_given() {
        let ca = Ca::new("ca", Validity::days(3650)).unwrap();
        let v = Validity::days(10);
        let now = OffsetDateTime::now_utc();
        assert!(
            (v.not_before - (now - time::Duration::days(1))).abs() < time::Duration::minutes(1)
        );
        assert!(
            (v.not_after - (now + time::Duration::days(10))).abs() < time::Duration::minutes(1)
        );
        let pem = ca.issue_client("carol", &[], v).unwrap();
        let hour = time::Duration::hours(1);
        // Valid on a clock up to a day behind and up to ten days ahead...
        client_ok_at(&ca, &pem.cert, now - time::Duration::days(1) + hour).unwrap();
        client_ok_at(&ca, &pem.cert, now - time::Duration::seconds(30)).unwrap();
        client_ok_at(&ca, &pem.cert, now + time::Duration::days(10) - hour).unwrap();
        // ...and not outside.
        let early = client_ok_at(&ca, &pem.cert, now - time::Duration::days(1) - hour);
        assert!(
            matches!(
                early,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidYet
                        | rustls::CertificateError::NotValidYetContext { .. }
                ))
            ),
            "{early:?}"
        );
        let late = client_ok_at(&ca, &pem.cert, now + time::Duration::days(10) + hour);
        assert!(
            matches!(
                late,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                        | rustls::CertificateError::ExpiredContext { .. }
                ))
            ),
            "{late:?}"
        );
        let backwards = Validity {
            not_before: now,
            not_after: now - hour,
        };
        assert!(ca.issue_client("carol", &[], backwards).is_err());
    }

    #[test]
    fn every_certificate_has_a_new_key_and_a_random_16_byte_serial() {
        let ca = Ca::new("ca", Validity::days(1)).unwrap();
        let a = ca.issue_client("dave", &[], Validity::days(1)).unwrap();
        let b = ca.issue_client("dave", &[], Validity::days(1)).unwrap();
        assert_ne!(a.key, b.key);
        let (da, db) = (der(&a.cert), der(&b.cert));
        let sa = webpki::EndEntityCert::try_from(&da)
            .unwrap()
            .serial()
            .to_vec();
        let sb = webpki::EndEntityCert::try_from(&db)
            .unwrap()
            .serial()
            .to_vec();
        assert_eq!(sa.len(), 16);
        assert_ne!(sa, sb);
        assert_eq!(random_token().unwrap().len(), 64);
        assert_ne!(random_token().unwrap(), random_token().unwrap());
    }

    #[test]
    fn from_pem_rebuilds_the_issuer_of_our_own_ca_files() {
        let ca = Ca::new("leasehold-client-ca", Validity::days(30)).unwrap();
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let erin = again
            .issue_client("erin", &groups(&["team-e"]), Validity::days(1))
            .unwrap();
        // Verified by a verifier built from the original CA file.
        client_ok(&ca, &erin.cert).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());

        // A key that is not the certificate's.
        let other = Ca::new("leasehold-client-ca", Validity::days(30)).unwrap();
        let err = Ca::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
        assert!(matches!(err, PkiError::Ca(_)), "{err}");
        // Not PEM at all.
        assert!(matches!(
            Ca::from_pem("garbage", ca.key_pem()),
            Err(PkiError::Ca(_))
        ));
        assert!(matches!(
            Ca::from_pem(ca.cert_pem(), "garbage"),
            Err(PkiError::Ca(_))
        ));
        // A leaf is not a CA (webpki would take it as a root).
        let leaf = ca.issue_client("frank", &[], Validity::days(1)).unwrap();
        assert!(is_ca_certificate(ca.cert_der()));
        assert!(!is_ca_certificate(&der(&leaf.cert)));
        let err = Ca::from_pem(&leaf.cert, &leaf.key).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn debug_output_leaves_private_keys_out() {
        let ca = Ca::new("ca", Validity::days(1)).unwrap();
        let pem = ca.issue_client("gina", &[], Validity::days(1)).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        assert!(!format!("{pem:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn oids_and_lengths_decode() {
        assert_eq!(decode_oid(&[0x55, 0x04, 0x03]), Some(vec![2, 5, 4, 3]));
        assert_eq!(
            decode_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            Some(vec![1, 2, 840, 113549])
        );
        assert_eq!(decode_oid(&[0x55, 0x84]), None);
        assert_eq!(
            der_next(&[0x30, 0x81, 0x02, 1, 2, 9]),
            Some((0x30, &[1u8, 2][..], &[9u8][..]))
        );
        assert_eq!(der_next(&[0x30, 0x03, 1]), None);
    }
}
