<?php
/**
 * The plugin's own classes: settings sanitiser, IP resolution, the ingest body, fail policy.
 */

use PHPUnit\Framework\TestCase;

class CoreTest extends TestCase {

	public function test_sanitize_keeps_only_whitelisted_valid_values() {
		$out = Activelead_Settings::sanitize(
			array(
				'mode'            => 'monitor',
				'blocked_action'  => 'explode',
				'timeout'         => '0.5',
				'trusted_proxies' => "10.0.0.0/8\n192.168.1.1, nonsense",
				'evil'            => 'x',
				'api_url'         => 'javascript:alert(1)',
			)
		);
		$this->assertSame( 'monitor', $out['mode'] );
		$this->assertContains( $out['blocked_action'], Activelead_Settings::ACTIONS );
		$this->assertSame( 0.5, $out['timeout'] );
		$this->assertSame( '10.0.0.0/8, 192.168.1.1', $out['trusted_proxies'] );
		$this->assertArrayNotHasKey( 'evil', $out );
		$this->assertStringStartsWith( 'http', $out['api_url'] );
		$codes = wp_list_pluck( get_settings_errors( Activelead_Settings::OPTION ), 'code' );
		$this->assertContains( 'activelead_blocked_action', $codes );
		$this->assertContains( 'activelead_trusted_proxies', $codes );
		$this->assertContains( 'activelead_api_url', $codes );
	}

	public function test_key_shape() {
		$this->assertTrue( Activelead_Settings::is_key_shaped( 'al_live_3kT9xQ2mLw8Z_' . str_repeat( 'a1B', 12 ) . 'xy' ) );
		$this->assertFalse( Activelead_Settings::is_key_shaped( 'al_edge_3kT9xQ2mLw8Z_Vh4r0cN1pYb7sK2dE5fG8jM6qT0uW3xA9zRt2' ) );
		$this->assertFalse( Activelead_Settings::is_key_shaped( 'hello' ) );
	}

	public function test_ip_ranges() {
		$this->assertTrue( Activelead::ip_in_list( '10.1.2.3', array( '10.0.0.0/8' ) ) );
		$this->assertFalse( Activelead::ip_in_list( '11.1.2.3', array( '10.0.0.0/8' ) ) );
		$this->assertTrue( Activelead::ip_in_list( '2001:db8::1', array( '2001:db8::/32' ) ) );
		$this->assertFalse( Activelead::ip_in_list( '10.0.0.1', array( '2001:db8::/32' ) ) );
		$this->assertTrue( Activelead::ip_in_list( '192.168.1.77', array( '192.168.1.64/26' ) ) );
		$this->assertFalse( Activelead::ip_in_list( '192.168.1.130', array( '192.168.1.64/26' ) ) );
		$this->assertTrue( Activelead::valid_cidr( '::1/128' ) );
		$this->assertFalse( Activelead::valid_cidr( '10.0.0.0/33' ) );
	}

	/**
	 * @dataProvider client_ip_cases
	 */
	public function test_client_ip_believes_only_trusted_proxies( $proxies, $remote, $xff, $expected ) {
		$settings = get_option( 'activelead_settings' );
		update_option( 'activelead_settings', array_merge( $settings, array( 'trusted_proxies' => $proxies ) ) );
		$_SERVER['REMOTE_ADDR']          = $remote;
		$_SERVER['HTTP_X_FORWARDED_FOR'] = $xff;
		try {
			$this->assertSame( $expected, Activelead::client_ip() );
		} finally {
			update_option( 'activelead_settings', $settings );
			$_SERVER['REMOTE_ADDR'] = '127.0.0.1';
			unset( $_SERVER['HTTP_X_FORWARDED_FOR'] );
		}
	}

	public function client_ip_cases() {
		return array(
			'no proxies: XFF ignored'     => array( '', '203.0.113.5', '1.2.3.4', '203.0.113.5' ),
			'untrusted peer: XFF ignored' => array( '10.0.0.0/8', '203.0.113.5', '1.2.3.4', '203.0.113.5' ),
			'trusted peer'                => array( '10.0.0.0/8', '10.0.0.2', '198.51.100.7', '198.51.100.7' ),
			'spoofed left-most entry'     => array( '10.0.0.0/8', '10.0.0.2', '6.6.6.6, 198.51.100.7, 10.0.0.9', '198.51.100.7' ),
			'garbage in XFF'              => array( '10.0.0.0/8', '10.0.0.2', 'nonsense', '10.0.0.2' ),
		);
	}

	public function test_submission_body_matches_the_ingest_contract() {
		$body = Activelead::submission(
			array( 'form_id' => 'wp-comment', 'email' => 'a@example.org', 'name' => 'A', 'content' => 'Hi', 'fields' => array( 'url' => '', 'extra' => array( 'x', 'y' ) ) ),
			'lead-1',
			true
		);
		$this->assertSame( array( 'formId', 'leadId', 'ip', 'email', 'userAgent', 'pageUrl', 'referrer', 'fields', 'headers', 'metadata', 'signals' ), array_keys( $body ) );
		$this->assertSame( array( 'name' => 'A', 'content' => 'Hi', 'extra' => 'x, y' ), (array) $body['fields'] );
		$this->assertTrue( $body['signals']['honeypotFilled'] );
		$this->assertSame( 'wordpress', $body['metadata']['source'] );
	}

	public function test_error_text_reads_the_nested_error_body() {
		$body = array(
			'error' => array(
				'code'      => 'credits_exhausted',
				'message'   => 'the account has no credits left',
				'details'   => array( 'balance' => 0 ),
				'requestId' => 'req_1',
			),
		);
		$this->assertSame( 'the account has no credits left (credits_exhausted)', Activelead_Client::error_text( $body ) );
		$this->assertSame( 'rate_limited', Activelead_Client::error_text( array( 'error' => array( 'code' => 'rate_limited' ) ) ) );
		$this->assertSame( '', Activelead_Client::error_text( array( 'code' => 'flat', 'message' => 'not ours' ) ) );
		$this->assertSame( '', Activelead_Client::error_text( array( 'error' => 'a string' ) ) );
	}

	public function test_unreachable_service_fails_open_then_closed() {
		$settings = get_option( 'activelead_settings' );
		try {
			update_option( 'activelead_settings', array_merge( $settings, array( 'api_url' => 'http://127.0.0.1:9', 'fail_mode' => 'open' ) ) );
			$result = Activelead::check( array( 'email' => 'a@example.org' ) );
			$this->assertSame( 'allow', $result['action'] );
			$this->assertContains( 'degraded', $result['labels'] );
			$this->assertNotSame( '', $result['error'] );
			update_option( 'activelead_settings', array_merge( $settings, array( 'api_url' => 'http://127.0.0.1:9', 'fail_mode' => 'closed' ) ) );
			$this->assertSame( 'block', Activelead::check( array( 'email' => 'a@example.org' ) )['action'] );
			$this->assertNotEmpty( get_option( 'activelead_status' )['last_error'] );
		} finally {
			update_option( 'activelead_settings', $settings );
			delete_option( 'activelead_status' );
		}
	}

	public function test_trusted_users_are_never_checked() {
		$admin = get_user_by( 'login', 'admin' );
		wp_set_current_user( $admin->ID );
		try {
			$result = Activelead::check( array( 'email' => 'activelead-test-block@example.com' ) );
			$this->assertTrue( $result['skipped'] );
			$this->assertSame( 'allow', $result['action'] );
		} finally {
			wp_set_current_user( 0 );
		}
	}

	public function test_snippet_tag_is_async_with_site_key() {
		$settings = get_option( 'activelead_settings' );
		update_option( 'activelead_settings', array_merge( $settings, array( 'site_key' => 'pk_test"x' ) ) );
		try {
			$tag = Activelead::snippet_tag( '<script src="https://cdn.example/a.js"></script>', 'activelead-snippet' );
			$this->assertStringContainsString( 'async data-activelead data-site="pk_test&quot;x"', $tag );
			$this->assertSame( '<script src="x"></script>', Activelead::snippet_tag( '<script src="x"></script>', 'other' ) );
		} finally {
			update_option( 'activelead_settings', $settings );
		}
	}
}
