//! The user and groups in a verified certificate's subject: the common
//! name (CN, OID 2.5.4.3) is the user, each organization (O, 2.5.4.10) a
//! group, as kube-apiserver reads client certificates.
//!
//! A small DER reader rather than an X.509 crate: only the subject is
//! needed, webpki hands it over already delimited, and only certificates
//! whose chain verified reach this code. It still treats the bytes as
//! untrusted: every length is checked and anything unexpected is skipped or
//! refused, never indexed blindly.

/// The first DER element of `input`: its tag, its contents and what
/// follows. Definite lengths up to 4 bytes only (certificates need 2).
pub(crate) fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

const SET: u8 = 0x31;
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const CN: &[u8] = &[0x55, 0x04, 0x03];
const O: &[u8] = &[0x55, 0x04, 0x0a];

/// A directory string's text: UTF8String, PrintableString or IA5String
/// (what openssl, rcgen and cfssl write); other string types are skipped.
fn text(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 => std::str::from_utf8(value).ok().map(str::to_string),
        _ => None,
    }
}

/// The CN and the O values of a subject (the contents of its Name
/// SEQUENCE, as `webpki::Cert::subject` gives it). `None` if it is not
/// well-formed DER.
pub fn common_name_and_organizations(subject: &[u8]) -> Option<(Option<String>, Vec<String>)> {
    let mut cn = None;
    let mut orgs = Vec::new();
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_next(rdns)?;
        rdns = rest;
        if tag != SET {
            return None;
        }
        let mut atvs = set;
        while !atvs.is_empty() {
            let (tag, atv, rest) = der_next(atvs)?;
            atvs = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = der_next(atv)?;
            if tag != OID {
                return None;
            }
            let (vtag, value, _) = der_next(value)?;
            if oid == CN {
                // The last CN wins, as Go's pkix.Name does.
                if let Some(t) = text(vtag, value) {
                    cn = Some(t);
                }
            } else if oid == O {
                if let Some(t) = text(vtag, value) {
                    orgs.push(t);
                }
            }
        }
    }
    Some((cn, orgs))
}

/// The CN and O values of a DER certificate.
pub fn of_certificate(
    der: &rustls_pki_types::CertificateDer<'_>,
) -> Option<(Option<String>, Vec<String>)> {
    let cert = webpki::EndEntityCert::try_from(der).ok()?;
    common_name_and_organizations(cert.subject())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if content.len() < 0x80 {
            v.push(content.len() as u8);
        } else {
            v.push(0x82);
            v.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(content);
        v
    }

    fn atv(oid: &[u8], tag: u8, s: &str) -> Vec<u8> {
        let mut c = tlv(OID, oid);
        c.extend(tlv(tag, s.as_bytes()));
        tlv(SET, &tlv(SEQUENCE, &c))
    }

    #[test]
    fn reads_the_common_name_and_every_organization() {
        let mut name = atv(O, 0x0c, "team-a");
        name.extend(atv(&[0x55, 0x04, 0x06], 0x13, "DE"));
        name.extend(atv(O, 0x13, "admins"));
        name.extend(atv(CN, 0x0c, "alice"));
        let (cn, orgs) = common_name_and_organizations(&name).unwrap();
        assert_eq!(cn.as_deref(), Some("alice"));
        assert_eq!(orgs, vec!["team-a".to_string(), "admins".to_string()]);
    }

    #[test]
    fn long_lengths_and_missing_names() {
        let long = "x".repeat(300);
        let name = atv(CN, 0x0c, &long);
        assert_eq!(common_name_and_organizations(&name).unwrap().0, Some(long));
        assert_eq!(common_name_and_organizations(&[]).unwrap(), (None, vec![]));
    }

    #[test]
    fn malformed_input_is_refused_not_indexed() {
        let name = atv(CN, 0x0c, "alice");
        for cut in 1..name.len() {
            assert_eq!(
                common_name_and_organizations(&name[..cut]),
                None,
                "cut {cut}"
            );
        }
        assert_eq!(
            common_name_and_organizations(&[0x31, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(common_name_and_organizations(&[0x04, 0x00]), None);
    }
}
