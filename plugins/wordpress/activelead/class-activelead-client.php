<?php
/**
 * The HTTP client of the Activelead control API: ingest, feedback, credits and erasure, each with
 * a bounded timeout through wp_remote_*. Failures are returned, never thrown, and remembered in
 * the `activelead_status` option so the admin notices can say what went wrong.
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Talks to `{api_url}/v1/*` with `Authorization: Bearer <API key>`.
 */
class Activelead_Client {

	/**
	 * Service base URL without a trailing slash.
	 *
	 * @var string
	 */
	private $url;

	/**
	 * API key (al_live_…).
	 *
	 * @var string
	 */
	private $key;

	/**
	 * Timeout of one call in seconds.
	 *
	 * @var float
	 */
	private $timeout;

	/**
	 * Client for the effective settings, or for explicit ones (the "Test connection" button).
	 *
	 * @param string|null $url     Service base URL.
	 * @param string|null $key     API key.
	 * @param float|null  $timeout Seconds.
	 */
	public function __construct( $url = null, $key = null, $timeout = null ) {
		$this->url     = untrailingslashit( (string) ( null === $url ? Activelead_Settings::get( 'api_url' ) : $url ) );
		$this->key     = (string) ( null === $key ? Activelead_Settings::get( 'api_key' ) : $key );
		$this->timeout = (float) ( null === $timeout ? Activelead_Settings::get( 'timeout' ) : $timeout );
		if ( $this->timeout <= 0 ) {
			$this->timeout = 2.0;
		}
	}

	/**
	 * Whether a key is configured at all.
	 *
	 * @return bool
	 */
	public function configured() {
		return '' !== $this->key && '' !== $this->url;
	}

	/**
	 * Score one submission.
	 *
	 * @param array<string, mixed> $submission Submission JSON (control_api/README.md).
	 * @return array{ok: bool, status: int, body: array<string, mixed>, error: string}
	 */
	public function ingest( array $submission ) {
		$headers = array();
		if ( ! empty( $submission['leadId'] ) ) {
			// Same lead id, same body: a retried request is answered from the service's store, not charged twice.
			$headers['Idempotency-Key'] = 'wp-' . $submission['leadId'];
		}
		return $this->request( 'POST', '/v1/ingest', $submission, $headers );
	}

	/**
	 * Report a moderator's verdict on a scored submission.
	 *
	 * @param string $trace_id Trace id from the verdict.
	 * @param string $verdict  spam or ham.
	 * @return array{ok: bool, status: int, body: array<string, mixed>, error: string}
	 */
	public function feedback( $trace_id, $verdict ) {
		return $this->request(
			'POST',
			'/v1/feedback',
			array(
				'traceId' => (string) $trace_id,
				'verdict' => 'spam' === $verdict ? 'spam' : 'ham',
			)
		);
	}

	/**
	 * The account's credit balance (also verifies the key).
	 *
	 * @return array{ok: bool, status: int, body: array<string, mixed>, error: string}
	 */
	public function credits() {
		return $this->request( 'GET', '/v1/credits' );
	}

	/**
	 * Erase the service's events of one e-mail address (privacy eraser).
	 *
	 * @param string $email Address.
	 * @return array{ok: bool, status: int, body: array<string, mixed>, error: string}
	 */
	public function erase( $email ) {
		return $this->request( 'POST', '/v1/erasure', array( 'email' => (string) $email ) );
	}

	/**
	 * One call. `ok` is true for a 2xx JSON answer; otherwise `error` says why in one line.
	 *
	 * @param string                    $method  GET or POST.
	 * @param string                    $path    Path under the base URL.
	 * @param array<string, mixed>|null $body    JSON body.
	 * @param array<string, string>     $headers Extra headers.
	 * @return array{ok: bool, status: int, body: array<string, mixed>, error: string}
	 */
	private function request( $method, $path, $body = null, array $headers = array() ) {
		if ( ! $this->configured() ) {
			return array(
				'ok'     => false,
				'status' => 0,
				'body'   => array(),
				'error'  => __( 'No API key is set.', 'activelead' ),
			);
		}
		$args = array(
			'method'      => $method,
			'timeout'     => $this->timeout,
			'redirection' => 0,
			'user-agent'  => 'Activelead-WordPress/' . ACTIVELEAD_VERSION . '; ' . get_bloginfo( 'url' ),
			'headers'     => array_merge(
				array(
					'Authorization' => 'Bearer ' . $this->key,
					'Accept'        => 'application/json',
				),
				$headers
			),
		);
		if ( null !== $body ) {
			$args['headers']['Content-Type'] = 'application/json';
			$args['body']                    = wp_json_encode( $body );
		}
		$response = wp_remote_request( $this->url . $path, $args );
		if ( is_wp_error( $response ) ) {
			$result = array(
				'ok'     => false,
				'status' => 0,
				'body'   => array(),
				'error'  => $response->get_error_message(),
			);
		} else {
			$status  = (int) wp_remote_retrieve_response_code( $response );
			$decoded = json_decode( (string) wp_remote_retrieve_body( $response ), true );
			$decoded = is_array( $decoded ) ? $decoded : array();
			$ok      = $status >= 200 && $status < 300;
			$error   = '';
			if ( ! $ok ) {
				$error = sprintf( 'HTTP %d %s', $status, self::error_text( $decoded ) );
			}
			$result = array(
				'ok'     => $ok,
				'status' => $status,
				'body'   => $decoded,
				'error'  => trim( $error ),
			);
		}
		self::remember( $result, $path );
		return $result;
	}

	/**
	 * The message and code of a control API error answer,
	 * `{"error": {"code": "…", "message": "…", "details": {…}, "requestId": "…"}}`,
	 * as "message (code)"; empty when the body is not such an answer.
	 *
	 * @param array<string, mixed> $decoded Decoded JSON body.
	 * @return string
	 */
	public static function error_text( array $decoded ) {
		$error   = isset( $decoded['error'] ) && is_array( $decoded['error'] ) ? $decoded['error'] : array();
		$message = isset( $error['message'] ) && is_string( $error['message'] ) ? $error['message'] : '';
		$code    = isset( $error['code'] ) && is_string( $error['code'] ) ? $error['code'] : '';
		if ( '' === $code ) {
			return $message;
		}
		return '' === $message ? $code : $message . ' (' . $code . ')';
	}

	/**
	 * Keep what the admin notices need: key validity, the last error, the credit state.
	 *
	 * @param array<string, mixed> $result Result of request().
	 * @param string               $path   Path called.
	 * @return void
	 */
	private static function remember( array $result, $path ) {
		$status  = get_option( Activelead_Settings::STATUS_OPTION, array() );
		$status  = is_array( $status ) ? $status : array();
		$changed = $status;
		if ( $result['ok'] ) {
			$changed['key_invalid']  = false;
			$changed['last_error']   = '';
			$changed['credits_out']  = false;
			if ( '/v1/credits' === $path ) {
				$changed['credits']       = isset( $result['body']['balance'] ) ? (int) $result['body']['balance'] : null;
				$changed['credits_low']   = ! empty( $result['body']['low'] );
				$changed['credits_out']   = ! empty( $result['body']['exhausted'] );
				$changed['credits_check'] = time();
			}
		} elseif ( 401 === $result['status'] || 403 === $result['status'] ) {
			$changed['key_invalid'] = true;
			$changed['last_error']  = $result['error'];
		} elseif ( 402 === $result['status'] ) {
			$changed['credits_out'] = true;
			$changed['credits_low'] = true;
			$changed['last_error']  = $result['error'];
		} elseif ( 0 === $result['status'] || $result['status'] >= 500 ) {
			$changed['last_error']    = $result['error'];
			$changed['last_error_at'] = time();
		}
		if ( $changed !== $status ) {
			update_option( Activelead_Settings::STATUS_OPTION, $changed, false );
		}
	}
}
