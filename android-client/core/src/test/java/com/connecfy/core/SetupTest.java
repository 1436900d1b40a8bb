package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.Set;

import org.junit.Test;

/** What the main screen lists as missing before the gateway can work. */
public class SetupTest {
    private static final SimChoice.Decision ONE_SIM = SimChoice.decide(1, new int[] {3}, 3, SimChoice.DEFAULT);
    private static final SimChoice.Decision ASK = SimChoice.decide(2, new int[] {3, 4}, SimChoice.DEFAULT,
        SimChoice.DEFAULT);
    private static final SimChoice.Decision UNLISTED = SimChoice.decide(2, null, SimChoice.DEFAULT,
        SimChoice.DEFAULT);

    private static Set<String> granted(String... permissions) {
        return new HashSet<String>(Arrays.asList(permissions));
    }

    @Test
    public void thePermissionsToAskFor() {
        assertEquals(Arrays.asList(Setup.SEND_SMS, Setup.READ_PHONE_STATE), Setup.neededPermissions(24, false));
        assertEquals(Arrays.asList(Setup.SEND_SMS, Setup.READ_PHONE_STATE), Setup.neededPermissions(32, false));
        assertEquals(Arrays.asList(Setup.SEND_SMS, Setup.READ_PHONE_STATE, Setup.POST_NOTIFICATIONS),
            Setup.neededPermissions(33, false));
    }

    @Test
    public void everythingMissingOnAFreshDualSimPhone() {
        assertEquals(Arrays.asList(Setup.Item.SEND_SMS, Setup.Item.READ_PHONE_STATE, Setup.Item.NOTIFICATIONS,
            Setup.Item.BATTERY_EXEMPTION), Setup.missing(34, false, granted(), false, UNLISTED));
    }

    @Test
    public void theSimChoiceIsAMissingItem() {
        Set<String> all = granted(Setup.SEND_SMS, Setup.READ_PHONE_STATE, Setup.POST_NOTIFICATIONS);
        assertEquals(Arrays.asList(Setup.Item.SIM_CHOICE), Setup.missing(34, false, all, true, ASK));
        assertEquals(Collections.emptyList(), Setup.missing(34, false, all, true, ONE_SIM));
    }

    @Test
    public void receivingSmsIsNeededOnlyWhileForwardingIsOn() {
        assertEquals(Arrays.asList(Setup.SEND_SMS, Setup.RECEIVE_SMS, Setup.READ_PHONE_STATE),
            Setup.neededPermissions(24, true));
        Set<String> sendOnly = granted(Setup.SEND_SMS, Setup.READ_PHONE_STATE, Setup.POST_NOTIFICATIONS);
        assertEquals(Arrays.asList(Setup.Item.RECEIVE_SMS), Setup.missing(34, true, sendOnly, true, ONE_SIM));
        assertEquals(Collections.emptyList(), Setup.missing(34, false, sendOnly, true, ONE_SIM));
        assertEquals(Arrays.asList(Setup.Item.SEND_SMS, Setup.Item.RECEIVE_SMS, Setup.Item.READ_PHONE_STATE,
            Setup.Item.NOTIFICATIONS, Setup.Item.BATTERY_EXEMPTION), Setup.missing(34, true, granted(), false, UNLISTED));
    }

    @Test
    public void batteryExemptionIsPartOfTheSetUp() {
        Set<String> all = granted(Setup.SEND_SMS, Setup.READ_PHONE_STATE);
        assertEquals(Arrays.asList(Setup.Item.BATTERY_EXEMPTION), Setup.missing(26, false, all, false, ONE_SIM));
        assertTrue(Setup.missing(26, false, all, true, ONE_SIM).isEmpty());
    }
}
