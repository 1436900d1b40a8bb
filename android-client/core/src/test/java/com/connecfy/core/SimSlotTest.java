package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

import org.junit.Test;

/** The SIM slot that received an SMS, from the broadcast's extras; best effort. */
public class SimSlotTest {
    /** Subscription 7 is in slot 1, 3 in slot 0; others are unknown. */
    private static final SimSlot.Lookup PHONE = new SimSlot.Lookup() {
        @Override
        public Integer slotOf(int subscriptionId) {
            return subscriptionId == 7 ? Integer.valueOf(1) : subscriptionId == 3 ? Integer.valueOf(0) : null;
        }
    };

    private static Map<String, Object> extras(Object... keysAndValues) {
        Map<String, Object> extras = new HashMap<String, Object>();
        for (int i = 0; i < keysAndValues.length; i += 2) {
            extras.put((String) keysAndValues[i], keysAndValues[i + 1]);
        }
        return extras;
    }

    @Test
    public void aSlotTheBroadcastNamesComesFirst() {
        assertEquals(Integer.valueOf(1), SimSlot.fromExtras(extras("android.telephony.extra.SLOT_INDEX", 1,
            "subscription", 3, "phone", 0), PHONE));
        assertEquals(Integer.valueOf(0), SimSlot.fromExtras(extras("slot", 0, "subscription", 7), PHONE));
    }

    @Test
    public void elseTheSubscriptionIsLookedUp() {
        assertEquals(Integer.valueOf(1), SimSlot.fromExtras(extras("subscription", 7), PHONE));
        assertEquals("a long, as on Android 5.0", Integer.valueOf(1),
            SimSlot.fromExtras(extras("subscription", 7L), PHONE));
        assertEquals(Integer.valueOf(0),
            SimSlot.fromExtras(extras("android.telephony.extra.SUBSCRIPTION_INDEX", 3), PHONE));
        assertEquals("digits as text", Integer.valueOf(1), SimSlot.fromExtras(extras("subscription", " 7"), PHONE));
    }

    @Test
    public void thePhoneIdIsTheLastResort() {
        assertEquals(Integer.valueOf(1), SimSlot.fromExtras(extras("subscription", 99, "phone", 1), PHONE));
        assertEquals(Integer.valueOf(0), SimSlot.fromExtras(extras("phone", 0), null));
    }

    @Test
    public void nothingUsableMeansNoSlot() {
        assertNull(SimSlot.fromExtras(extras(), PHONE));
        assertNull(SimSlot.fromExtras(extras("slot", -1, "android.telephony.extra.SLOT_INDEX", 99,
            "subscription", -1, "phone", "x"), PHONE));
        assertNull(SimSlot.fromExtras(extras("subscription", Integer.MAX_VALUE, "slot", true), PHONE));
        assertEquals(Arrays.asList("android.telephony.extra.SLOT_INDEX", "slot",
            "android.telephony.extra.SUBSCRIPTION_INDEX", "subscription", "phone"), Arrays.asList(SimSlot.keys()));
    }
}
