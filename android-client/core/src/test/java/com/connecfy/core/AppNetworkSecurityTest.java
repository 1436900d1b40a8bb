package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.io.FileInputStream;
import java.io.InputStream;
import java.security.MessageDigest;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.List;

import javax.xml.parsers.DocumentBuilderFactory;

import org.junit.Test;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.NodeList;

/**
 * The app's network security config, read from the app module's resources: HTTPS to a
 * Let's Encrypt server works on Android 7.0 (which lacks ISRG Root X1) and to a LAN
 * server whose own CA the user installed, and plain HTTP stays allowed for LAN servers.
 * The bundled roots must be the real ISRG Root X1 and X2.
 */
public class AppNetworkSecurityTest {
    private static final String ANDROID = "http://schemas.android.com/apk/res/android";
    private static final String X1_SHA256 =
        "96BCEC06264976F37460779ACF28C5A7CFE8A3C0AAE11A8FFCEE05C0BDDF08C6";
    private static final String X2_SHA256 =
        "69729B8E15A86EFC177A57AFB7171DFC64ADD28C2FCA8CF1507E34453CCB1470";

    /** android-client/app/src/main, from the repository root (CI) or the core module (Gradle). */
    private static File appMain() {
        File here = new File(System.getProperty("user.dir")).getAbsoluteFile();
        for (File dir = here; dir != null; dir = dir.getParentFile()) {
            for (String candidate : new String[] {"android-client/app/src/main", "app/src/main"}) {
                File main = new File(dir, candidate);
                if (new File(main, "AndroidManifest.xml").isFile()) {
                    return main;
                }
            }
        }
        throw new AssertionError("no android-client/app/src/main above " + here);
    }

    private static Document parse(File file) throws Exception {
        assertTrue("missing " + file, file.isFile());
        DocumentBuilderFactory factory = DocumentBuilderFactory.newInstance();
        factory.setNamespaceAware(true);
        return factory.newDocumentBuilder().parse(file);
    }

    @Test
    public void theManifestUsesTheNetworkSecurityConfig() throws Exception {
        Element application = (Element) parse(new File(appMain(), "AndroidManifest.xml"))
            .getElementsByTagName("application").item(0);
        assertEquals("@xml/network_security_config", application.getAttributeNS(ANDROID, "networkSecurityConfig"));
    }

    @Test
    public void itTrustsTheSystemTheUserAndTheBundledIsrgRoots() throws Exception {
        Document config = parse(new File(appMain(), "res/xml/network_security_config.xml"));
        NodeList bases = config.getElementsByTagName("base-config");
        assertEquals(1, bases.getLength());
        Element base = (Element) bases.item(0);
        assertEquals("plain http:// stays allowed for LAN servers", "true",
            base.getAttribute("cleartextTrafficPermitted"));
        List<String> sources = new ArrayList<String>();
        NodeList anchors = base.getElementsByTagName("certificates");
        for (int i = 0; i < anchors.getLength(); i++) {
            sources.add(((Element) anchors.item(i)).getAttribute("src"));
        }
        assertTrue(sources.toString(), sources.contains("system"));
        assertTrue(sources.toString(), sources.contains("user"));
        assertTrue(sources.toString(), sources.contains("@raw/isrg_root_x1"));
        assertTrue(sources.toString(), sources.contains("@raw/isrg_root_x2"));
    }

    @Test
    public void theBundledRootsAreTheRealIsrgRoots() throws Exception {
        checkRoot("isrg_root_x1.pem", "CN=ISRG Root X1, O=Internet Security Research Group, C=US", X1_SHA256);
        checkRoot("isrg_root_x2.pem", "CN=ISRG Root X2, O=Internet Security Research Group, C=US", X2_SHA256);
    }

    private static void checkRoot(String name, String subject, String sha256) throws Exception {
        File file = new File(appMain(), "res/raw/" + name);
        assertTrue("missing " + file, file.isFile());
        InputStream in = new FileInputStream(file);
        X509Certificate certificate;
        try {
            certificate = (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        } finally {
            in.close();
        }
        assertNotNull(certificate);
        assertEquals(subject, certificate.getSubjectX500Principal().getName("RFC2253").replace(",", ", "));
        assertEquals("self-signed root", certificate.getSubjectX500Principal(), certificate.getIssuerX500Principal());
        StringBuilder hex = new StringBuilder();
        for (byte b : MessageDigest.getInstance("SHA-256").digest(certificate.getEncoded())) {
            hex.append(String.format("%02X", b));
        }
        assertEquals(name + " SHA-256", sha256, hex.toString());
    }
}
