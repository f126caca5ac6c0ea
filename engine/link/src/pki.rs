//! The link's certificates (PROTOCOL.md section 2): the node's link CA and server
//! certificate, one CA per site for its IQs' client certificates, issuing a certificate
//! from an IQ's CSR at enrolment, reading an IQ's identity back from its certificate, and
//! the rustls configurations of both sides (ring provider).
//!
//! Everything is kept under `<data dir>/link/` as DER files; private keys are written
//! with mode 0600 and never logged.

use crate::backend::CertIdentity;
use keyway_core::{IqId, SiteId};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// How long an IQ's client certificate is valid.
pub const CLIENT_CERT_VALIDITY_DAYS: i64 = 5 * 365;

/// What can go wrong with the link's certificates.
#[derive(Debug, Error)]
pub enum PkiError {
    /// Reading or writing the data directory failed.
    #[error("link certificate store at `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Generating, parsing or signing a certificate failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// Building a TLS configuration failed.
    #[error("tls configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Building the client certificate verifier failed.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The system's random source failed.
    #[error("random source failed")]
    Random,
    /// A certificate that is not an IQ certificate of this node.
    #[error("not an iq certificate: {0}")]
    NotIqCertificate(&'static str),
    /// A server name that is not a valid DNS name or IP address.
    #[error("invalid server name `{0}`")]
    ServerName(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The ring crypto provider, the only one the link uses.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    fs::write(path, bytes).map_err(io_err(path))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| PkiError::Random)?;
    // A positive integer: clear the top bit.
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A certificate authority: its certificate and its key.
struct Ca {
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl Ca {
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(&self.cert, &self.key)?)
    }

    /// Loads the CA in `dir`, or makes one with common name `cn`.
    fn load_or_create(dir: &Path, cn: &str) -> Result<Ca, PkiError> {
        let cert_path = dir.join("ca.der");
        let key_path = dir.join("ca.key.der");
        if cert_path.exists() && key_path.exists() {
            let cert = fs::read(&cert_path).map_err(io_err(&cert_path))?;
            let key = fs::read(&key_path).map_err(io_err(&key_path))?;
            return Ok(Ca {
                cert: CertificateDer::from(cert),
                key: KeyPair::try_from(key.as_slice())?,
            });
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(20 * 365);
        let cert = params.self_signed(&key)?;
        write_private(&key_path, &key.serialize_der())?;
        write_public(&cert_path, cert.der())?;
        Ok(Ca {
            cert: cert.der().clone(),
            key,
        })
    }
}

/// A client certificate issued to an IQ at enrolment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its serial number, lowercase hex.
    pub serial: String,
    /// When it expires, ms since the epoch.
    pub not_after_ms: i64,
}

/// The common name of a site's CA.
#[must_use]
pub fn site_ca_name(site: SiteId) -> String {
    format!("Keyway site {} IQ CA", site.get())
}

/// The URI name that carries an IQ's identity.
#[must_use]
pub fn identity_uri(site: SiteId, iq: IqId) -> String {
    format!("urn:keyway:site:{}:iq:{}", site.get(), iq.get())
}

fn parse_identity_uri(uri: &str) -> Option<(SiteId, IqId)> {
    let rest = uri.strip_prefix("urn:keyway:site:")?;
    let (site, iq) = rest.split_once(":iq:")?;
    Some((SiteId(site.parse().ok()?), IqId(iq.parse().ok()?)))
}

/// The identity of an IQ from the certificate it presented: the URI name, checked
/// against the issuer (which must be the CA of the same site) and its serial number.
/// The chain itself was verified by rustls against the node's CAs.
pub fn identity_from_cert(der: &[u8]) -> Result<CertIdentity, PkiError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| PkiError::NotIqCertificate("unparsable"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| PkiError::NotIqCertificate("bad subject alternative names"))?
        .ok_or(PkiError::NotIqCertificate("no subject alternative name"))?;
    let (site, iq) = san
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => parse_identity_uri(uri),
            _ => None,
        })
        .ok_or(PkiError::NotIqCertificate("no keyway identity"))?;
    let issuer_cn = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or(PkiError::NotIqCertificate("issuer without a common name"))?;
    if issuer_cn != site_ca_name(site) {
        return Err(PkiError::NotIqCertificate("issued by another site's ca"));
    }
    Ok(CertIdentity {
        site,
        iq,
        serial: hex::encode(cert.raw_serial()),
    })
}

/// The link's certificate store: the link CA, the server certificate, and the site CAs.
pub struct LinkPki {
    dir: PathBuf,
    link_ca: Ca,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    sites: Mutex<HashMap<SiteId, Arc<Ca>>>,
}

impl std::fmt::Debug for LinkPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkPki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LinkPki {
    /// Opens (or creates) the store under `<data_dir>/link`. The server certificate is
    /// made afresh on each start for `server_names` (DNS names or IP addresses), signed by
    /// the link CA, which IQs trust.
    pub fn open(data_dir: &Path, server_names: &[String]) -> Result<LinkPki, PkiError> {
        let dir = data_dir.join("link");
        let link_ca = Ca::load_or_create(&dir, "Keyway link CA")?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(server_names.to_vec())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "keyway link server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(2 * 365);
        let cert = params.signed_by(&key, &link_ca.issuer()?)?;
        let sites_dir = dir.join("sites");
        let mut sites = HashMap::new();
        if sites_dir.exists() {
            for entry in fs::read_dir(&sites_dir).map_err(io_err(&sites_dir))? {
                let entry = entry.map_err(io_err(&sites_dir))?;
                let Some(site) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let site = SiteId(site);
                sites.insert(site, Arc::new(Ca::load_or_create(&entry.path(), &site_ca_name(site))?));
            }
        }
        Ok(LinkPki {
            server_chain: vec![cert.der().clone(), link_ca.cert.clone()],
            server_key: key.serialize_der(),
            link_ca,
            dir,
            sites: Mutex::new(sites),
        })
    }

    /// The link CA's certificate (DER): what an IQ must trust to verify the server. The
    /// API hands it out with the enrolment code.
    #[must_use]
    pub fn link_ca_der(&self) -> Vec<u8> {
        self.link_ca.cert.to_vec()
    }

    fn sites(&self) -> std::sync::MutexGuard<'_, HashMap<SiteId, Arc<Ca>>> {
        // A poisoned lock only means another thread panicked while holding it; the map is
        // still consistent (inserts are single operations).
        self.sites.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn site_ca(&self, site: SiteId) -> Result<(Arc<Ca>, bool), PkiError> {
        // The lock is held while a new CA is made and written, so that two enrolments of a
        // new site's IQs cannot each write a CA of their own (enrolments are rare; the
        // file IO is short).
        let mut sites = self.sites();
        if let Some(ca) = sites.get(&site) {
            return Ok((Arc::clone(ca), false));
        }
        let dir = self.dir.join("sites").join(site.get().to_string());
        let ca = Arc::new(Ca::load_or_create(&dir, &site_ca_name(site))?);
        sites.insert(site, Arc::clone(&ca));
        Ok((ca, true))
    }

    /// The site CA's certificate (DER), made if the site has none yet.
    pub fn site_ca_der(&self, site: SiteId) -> Result<Vec<u8>, PkiError> {
        Ok(self.site_ca(site)?.0.cert.to_vec())
    }

    /// Issues a client certificate for the public key of `csr_der` (a PKCS#10 request
    /// whose signature is checked), naming `site` and `iq`. Returns the certificate and
    /// whether the site's CA was new (the TLS configuration must then be rebuilt).
    pub fn issue(&self, site: SiteId, iq: IqId, csr_der: &[u8]) -> Result<(IssuedCertificate, bool), PkiError> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))?;
        let (ca, new_ca) = self.site_ca(site)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("keyway iq {} site {}", iq.get(), site.get()),
        );
        params.subject_alt_names = vec![SanType::URI(identity_uri(site, iq).try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial = random_serial()?;
        let serial_hex = hex::encode(serial.to_bytes());
        params.serial_number = Some(serial);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CLIENT_CERT_VALIDITY_DAYS);
        let not_after_ms = i64::try_from(params.not_after.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        let cert = params.signed_by(&csr.public_key, &ca.issuer()?)?;
        Ok((
            IssuedCertificate {
                der: cert.der().to_vec(),
                serial: serial_hex,
                not_after_ms,
            },
            new_ca,
        ))
    }

    /// The server's TLS configuration: the server certificate, and client certificates
    /// verified against every site CA (plus the link CA, which signs no client
    /// certificate, so that the set is never empty). A connection without a client
    /// certificate is let through the handshake: the control port allows it for
    /// `ENROL` only, and the session refuses anything else.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.link_ca.cert.clone())?;
        for ca in self.sites().values() {
            roots.add(ca.cert.clone())?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), key)?;
        Ok(Arc::new(config))
    }
}

/// What an IQ holds to connect: its key, its certificate and the CAs it trusts.
#[derive(Clone)]
pub struct IqCredentials {
    pub site: SiteId,
    /// Its id.
    pub iq: IqId,
    /// Its client certificate, DER.
    pub certificate: Vec<u8>,
    /// Its private key, PKCS#8 DER.
    pub key: Vec<u8>,
    /// The link CA it verifies the server against, DER.
    pub link_ca: Vec<u8>,
}

impl std::fmt::Debug for IqCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IqCredentials")
            .field("site", &self.site)
            .field("iq", &self.iq)
            .finish_non_exhaustive()
    }
}

/// A fresh key pair and a CSR for it, as an IQ makes before enrolment: (PKCS#8 key DER,
/// CSR DER).
pub fn new_key_and_csr() -> Result<(Vec<u8>, Vec<u8>), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "keyway iq");
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_der(), csr.der().to_vec()))
}

/// A client TLS configuration that verifies the server against `link_ca` and presents
/// the client certificate of `identity`, if any (none: for enrolment).
pub fn client_config(link_ca: &[u8], identity: Option<(&[u8], &[u8])>) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(link_ca.to_vec()))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            vec![CertificateDer::from(cert.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A server name for the client side's certificate check.
pub fn server_name(name: &str) -> Result<ServerName<'static>, PkiError> {
    ServerName::try_from(name.to_owned()).map_err(|_| PkiError::ServerName(name.to_owned()))
}
