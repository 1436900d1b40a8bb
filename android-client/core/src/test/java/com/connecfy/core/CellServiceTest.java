package com.connecfy.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;

import org.junit.Test;

/** Whether the radio can send SMS now, from the phone's service state and from SmsManager's result codes. */
public class CellServiceTest {
    @Test
    public void theServiceStateSaysWhetherTheRadioCanSend() {
        assertNull(CellService.whyCannotSend(CellService.STATE_IN_SERVICE));
        assertNull("not known yet: no reason to wait", CellService.whyCannotSend(CellService.STATE_UNKNOWN));
        assertEquals(CellService.Reason.NO_SERVICE, CellService.whyCannotSend(CellService.STATE_OUT_OF_SERVICE));
        assertEquals(CellService.Reason.NO_SERVICE, CellService.whyCannotSend(CellService.STATE_EMERGENCY_ONLY));
        assertEquals(CellService.Reason.RADIO_OFF, CellService.whyCannotSend(CellService.STATE_POWER_OFF));
    }

    @Test
    public void resultCodesOfNoServiceOrRadioOffAreTold() {
        assertEquals(CellService.Reason.RADIO_OFF, SmsErrors.radioProblem(2)); // RESULT_ERROR_RADIO_OFF
        assertEquals(CellService.Reason.NO_SERVICE, SmsErrors.radioProblem(4)); // RESULT_ERROR_NO_SERVICE
        assertEquals(CellService.Reason.RADIO_OFF, SmsErrors.radioProblem(9)); // RESULT_RADIO_NOT_AVAILABLE
        assertEquals(CellService.Reason.RADIO_OFF, SmsErrors.radioProblem(100)); // RESULT_RIL_RADIO_NOT_AVAILABLE
        assertEquals(CellService.Reason.NO_SERVICE, SmsErrors.radioProblem(135)); // RESULT_RIL_NO_NETWORK_FOUND
        assertNull(SmsErrors.radioProblem(1)); // RESULT_ERROR_GENERIC_FAILURE: could be anything
        assertNull(SmsErrors.radioProblem(SmsErrors.RESULT_OK));
        assertNull(SmsErrors.radioProblem(32));
    }

    @Test
    public void theReasonCodeStaysTheResultNameWithItsNumber() {
        assertEquals("RESULT_ERROR_NO_SERVICE (4)", SmsErrors.sendFailure(4));
        assertEquals("RESULT_ERROR_RADIO_OFF (2)", SmsErrors.sendFailure(2));
        assertEquals("no_service", CellService.Reason.NO_SERVICE.code);
        assertEquals("radio_off", CellService.Reason.RADIO_OFF.code);
    }
}
