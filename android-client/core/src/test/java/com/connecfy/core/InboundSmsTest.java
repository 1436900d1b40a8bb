package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

import org.json.JSONObject;
import org.junit.Test;

/** One received SMS: its parts joined, its sender, its reference and the request body. */
public class InboundSmsTest {
    private static List<InboundSms.Part> parts(String... addressAndBody) {
        List<InboundSms.Part> parts = new ArrayList<InboundSms.Part>();
        for (int i = 0; i < addressAndBody.length; i += 2) {
            parts.add(new InboundSms.Part(addressAndBody[i], addressAndBody[i + 1]));
        }
        return parts;
    }

    @Test
    public void theBodiesOfAMultipartSmsAreJoinedInTheirOrder() {
        List<InboundSms.Part> received = parts("+15557654321", "It was the best of times, ",
            "+15557654321", "it was the worst of times, ", "+15557654321", "it was the age of wisdom.");
        assertEquals("It was the best of times, it was the worst of times, it was the age of wisdom.",
            InboundSms.body(received));
        assertEquals("+15557654321", InboundSms.sender(received));
        assertEquals("Single", InboundSms.body(parts("+15557654321", "Single")));
        assertEquals("a part without a body adds nothing", "ab", InboundSms.body(parts("x", "a", "x", null, "x", "b")));
        assertEquals("", InboundSms.body(parts("x", null)));
    }

    @Test
    public void theSenderIsTheFirstPartThatNamesOneAsThePhoneGotIt() {
        assertEquals("MyBank", InboundSms.sender(parts(null, "a", "  ", "b", " MyBank ", "c", "Other", "d")));
        assertEquals("0171 not normalised", "01712345678", InboundSms.sender(parts("01712345678", "Hi")));
        assertNull(InboundSms.sender(parts(null, "a", "", "b")));
        assertNull(InboundSms.sender(new ArrayList<InboundSms.Part>()));
    }

    @Test
    public void aTextLongerThanTheServerTakesIsCutWithoutSplittingACharacter() {
        StringBuilder long1 = new StringBuilder();
        for (int i = 0; i < InboundSms.MAX_MESSAGE_CHARS - 1; i++) {
            long1.append('a');
        }
        String emoji = "\uD83D\uDE00"; // one character, two UTF-16 units
        String text = long1 + emoji + emoji + "tail";
        String cut = InboundSms.body(parts("x", text.substring(0, 3000), "x", text.substring(3000)));
        assertEquals(InboundSms.MAX_MESSAGE_CHARS, cut.codePointCount(0, cut.length()));
        assertTrue(cut.endsWith("a" + emoji));
        String exact = long1 + "b";
        assertEquals(exact, InboundSms.body(parts("x", exact)));
    }

    @Test
    public void theRequestBodyHasTheFieldsTheServerWants() throws Exception {
        InboundSms sms = new InboundSms("0b7f3c2e-8a4d-4b1e-9f2a-1c3d5e7f9a0b", "+15557654321", "Hello",
            1796472000123L, 1);
        JSONObject body = sms.toJson();
        assertEquals("+15557654321", body.getString("from"));
        assertEquals("Hello", body.getString("message"));
        assertEquals("2026-12-05T12:00:00.123Z", body.getString("received_at"));
        assertEquals("0b7f3c2e-8a4d-4b1e-9f2a-1c3d5e7f9a0b", body.getString("ref"));
        assertEquals(1, body.getInt("sim_slot"));
        assertEquals(5, body.length());
        JSONObject noSlot = new InboundSms("r", "BANK", "Hi", 0, null).toJson();
        assertFalse("no slot known, none sent", noSlot.has("sim_slot"));
        assertEquals("1970-01-01T00:00:00.000Z", noSlot.getString("received_at"));
    }

    @Test
    public void refsAreUniqueAndUseOnlyCharactersTheServerTakes() {
        Set<String> seen = new HashSet<String>();
        for (int i = 0; i < 20000; i++) {
            String ref = InboundSms.newRef();
            assertTrue(ref, ref.matches("[A-Za-z0-9_-]{1,64}"));
            assertTrue("a ref made twice: " + ref, seen.add(ref));
        }
    }

    @Test
    public void whatIsStoredComesBackTheSame() throws Exception {
        for (InboundSms sms : Arrays.asList(new InboundSms("r1", "+15557654321", "Hello \uD83D\uDE00", 1796472000123L, 0),
                new InboundSms("r2", "BANK", "Code 1234", 5L, null))) {
            InboundSms back = InboundSms.fromStored(new JSONObject(sms.toStored().toString()));
            assertEquals(sms.ref, back.ref);
            assertEquals(sms.from, back.from);
            assertEquals(sms.message, back.message);
            assertEquals(sms.receivedAt, back.receivedAt);
            assertEquals(sms.simSlot, back.simSlot);
        }
    }
}
