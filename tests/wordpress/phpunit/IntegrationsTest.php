<?php
/**
 * Each form-plugin integration, called with its documented hook arguments through WordPress's
 * own apply_filters / do_action, scored by the real control API (the test identity
 * activelead-test-block@example.com is always blocked).
 */

use PHPUnit\Framework\TestCase;

class IntegrationsTest extends TestCase {

	const SPAM = 'activelead-test-block@example.com';
	const HAM  = 'jane.reader@example.org';

	public function test_contact_form_7_flags_spam() {
		$spam = new Activelead_Stub_CF7_Submission( array( '_wpcf7' => '42', 'your-name' => 'Bot', 'your-email' => self::SPAM, 'your-message' => 'Buy now' ) );
		$this->assertTrue( apply_filters( 'wpcf7_spam', false, $spam ) );
		$this->assertSame( 'activelead', $spam->spam_log[0]['agent'] );
		$ham = new Activelead_Stub_CF7_Submission( array( 'your-name' => 'Jane', 'your-email' => self::HAM, 'your-message' => 'Could you send me a quote for the garden work?' ) );
		$this->assertFalse( apply_filters( 'wpcf7_spam', false, $ham ) );
		// Already spam stays spam without a call.
		$this->assertTrue( apply_filters( 'wpcf7_spam', true, $ham ) );
	}

	public function test_wpforms_sets_the_form_error() {
		$fields = array(
			1 => array( 'name' => 'Name', 'value' => 'Bot', 'type' => 'name' ),
			2 => array( 'name' => 'Email', 'value' => self::SPAM, 'type' => 'email' ),
		);
		do_action( 'wpforms_process', $fields, array(), array( 'id' => 7 ) );
		$this->assertNotEmpty( wpforms()->process->errors[7]['header'] );
		$fields[2]['value'] = self::HAM;
		do_action( 'wpforms_process', $fields, array(), array( 'id' => 8 ) );
		$this->assertArrayNotHasKey( 8, wpforms()->process->errors );
	}

	public function test_gravity_forms_entry_is_spam_and_gets_a_note() {
		$form  = array( 'id' => 3, 'fields' => array( (object) array( 'id' => 1, 'label' => 'Email' ), (object) array( 'id' => 2, 'label' => 'Message' ) ) );
		$entry = array( 'id' => 99, '1' => self::SPAM, '2' => 'Buy now' );
		$this->assertTrue( apply_filters( 'gform_entry_is_spam', false, $form, $entry ) );
		do_action( 'gform_after_submission', $entry, $form );
		$this->assertStringContainsString( 'blocked', GFAPI::$notes[0][2] );
		$entry['1'] = self::HAM;
		$this->assertFalse( apply_filters( 'gform_entry_is_spam', false, $form, $entry ) );
	}

	public function test_elementor_pro_validation_adds_an_error() {
		$handler = new Activelead_Stub_Elementor_Handler();
		$record  = new Activelead_Stub_Elementor_Record(
			array(
				'email'   => array( 'id' => 'email', 'type' => 'email', 'title' => 'Email', 'value' => self::SPAM ),
				'message' => array( 'id' => 'message', 'type' => 'textarea', 'title' => 'Message', 'value' => 'Buy now' ),
			)
		);
		do_action( 'elementor_pro/forms/validation', $record, $handler );
		$this->assertArrayHasKey( 'email', $handler->errors );
		$this->assertNotEmpty( $handler->messages );
	}

	public function test_ninja_forms_submit_data_gets_a_form_error() {
		$data = array( 'id' => 5, 'fields' => array( 1 => array( 'id' => 1, 'key' => 'email', 'value' => self::SPAM ) ) );
		$out  = apply_filters( 'ninja_forms_submit_data', $data );
		$this->assertNotEmpty( $out['errors']['form']['activelead'] );
		$data['fields'][1]['value'] = self::HAM;
		$this->assertArrayNotHasKey( 'errors', apply_filters( 'ninja_forms_submit_data', $data ) );
	}

	public function test_fluent_forms_validation_errors() {
		$form   = (object) array( 'id' => 11 );
		$errors = apply_filters( 'fluentform/validation_errors', array(), array( 'email' => self::SPAM, 'message' => 'Buy now' ), $form, array() );
		$this->assertArrayHasKey( 'activelead', $errors );
		$this->assertSame( array(), apply_filters( 'fluentform/validation_errors', array(), array( 'email' => self::HAM ), $form, array() ) );
	}

	public function test_formidable_validate_entry() {
		$errors = apply_filters( 'frm_validate_entry', array(), array( 'form_id' => 2, 'item_meta' => array( 7 => self::SPAM, 8 => 'Buy now' ) ) );
		$this->assertArrayHasKey( 'spam', $errors );
		$this->assertSame( array(), apply_filters( 'frm_validate_entry', array(), array( 'form_id' => 2, 'item_meta' => array( 7 => self::HAM ) ) ) );
	}

	public function test_woocommerce_checkout_and_registration() {
		$errors = new WP_Error();
		do_action( 'woocommerce_after_checkout_validation', array( 'billing_email' => self::SPAM, 'billing_first_name' => 'Bot' ), $errors );
		$this->assertTrue( $errors->has_errors() );
		$errors = apply_filters( 'woocommerce_registration_errors', new WP_Error(), 'bot', self::SPAM );
		$this->assertContains( 'activelead_blocked', $errors->get_error_codes() );
		$errors = apply_filters( 'woocommerce_registration_errors', new WP_Error(), 'jane', self::HAM );
		$this->assertFalse( $errors->has_errors() );
	}

	public function test_switched_off_integration_makes_no_call() {
		$settings = get_option( 'activelead_settings' );
		$saved    = $settings;
		$settings['integrations']['cf7'] = false;
		update_option( 'activelead_settings', $settings );
		try {
			$spam = new Activelead_Stub_CF7_Submission( array( 'your-email' => self::SPAM ) );
			$this->assertFalse( apply_filters( 'wpcf7_spam', false, $spam ) );
		} finally {
			update_option( 'activelead_settings', $saved );
		}
	}
}
