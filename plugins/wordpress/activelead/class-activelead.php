<?php
/**
 * The plugin's core: every hook is registered in init(), the shared check() turns a form
 * submission into one ingest call and an action, and the core WordPress forms (comments,
 * registration, login, lost password) are protected here.
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Hooks, the shared check and the core-form protections.
 */
class Activelead {

	const HONEYPOT_FIELD = 'activelead_website';
	const TOKEN_FIELD    = 'activelead_token';
	const META_KEY       = 'activelead_result';
	const META_TRACE     = 'activelead_trace_id';

	/**
	 * Whether init() ran (it is idempotent).
	 *
	 * @var bool
	 */
	private static $initiated = false;

	/**
	 * The result of the comment being submitted, from preprocess_comment to comment_post.
	 *
	 * @var array<string, mixed>|null
	 */
	private static $pending_comment = null;

	/**
	 * The result of the registration being submitted, kept for user_register.
	 *
	 * @var array<string, mixed>|null
	 */
	private static $pending_user = null;

	/**
	 * Register every hook of the plugin (front end, core forms, integrations, privacy).
	 *
	 * @return void
	 */
	public static function init() {
		if ( self::$initiated ) {
			return;
		}
		self::$initiated = true;

		add_action( 'init', array( __CLASS__, 'load_textdomain' ) );
		// After core's own wp_initialize_site (priority 10), which creates the new site's tables.
		add_action( 'wp_initialize_site', array( __CLASS__, 'initialize_site' ), 100 );

		// Honeypot and snippet on protected forms: no nonce or per-visitor value, so cached pages keep working.
		add_action( 'comment_form_after_fields', array( __CLASS__, 'render_honeypot' ) );
		add_action( 'register_form', array( __CLASS__, 'render_honeypot' ) );
		add_action( 'lostpassword_form', array( __CLASS__, 'render_honeypot' ) );
		add_action( 'login_form', array( __CLASS__, 'render_login_honeypot' ) );
		add_action( 'wp_enqueue_scripts', array( __CLASS__, 'enqueue_snippet' ) );
		add_action( 'login_enqueue_scripts', array( __CLASS__, 'enqueue_snippet' ) );
		add_filter( 'script_loader_tag', array( __CLASS__, 'snippet_tag' ), 10, 2 );

		// Core comments: score early, act when WordPress decides the status, store after insert.
		add_filter( 'preprocess_comment', array( __CLASS__, 'preprocess_comment' ), 1 );
		add_filter( 'pre_comment_approved', array( __CLASS__, 'pre_comment_approved' ), 99, 2 );
		add_action( 'comment_post', array( __CLASS__, 'comment_post' ), 10, 1 );
		add_action( 'transition_comment_status', array( __CLASS__, 'comment_status_changed' ), 10, 3 );

		// Registration, login, lost password.
		add_filter( 'registration_errors', array( __CLASS__, 'registration_errors' ), 10, 3 );
		add_action( 'user_register', array( __CLASS__, 'user_register' ) );
		add_filter( 'wp_authenticate_user', array( __CLASS__, 'authenticate_user' ), 10, 2 );
		add_action( 'lostpassword_post', array( __CLASS__, 'lostpassword_post' ), 10, 1 );

		// Form plugins: each hook does nothing unless that plugin calls it.
		add_filter( 'wpcf7_spam', array( 'Activelead_Integrations', 'cf7_spam' ), 10, 2 );
		add_action( 'wpforms_process', array( 'Activelead_Integrations', 'wpforms_process' ), 10, 3 );
		add_filter( 'gform_entry_is_spam', array( 'Activelead_Integrations', 'gform_entry_is_spam' ), 10, 3 );
		add_action( 'gform_after_submission', array( 'Activelead_Integrations', 'gform_after_submission' ), 10, 2 );
		add_action( 'elementor_pro/forms/validation', array( 'Activelead_Integrations', 'elementor_validation' ), 10, 2 );
		add_filter( 'ninja_forms_submit_data', array( 'Activelead_Integrations', 'ninja_forms_submit_data' ) );
		add_filter( 'fluentform/validation_errors', array( 'Activelead_Integrations', 'fluentform_validation_errors' ), 10, 4 );
		add_filter( 'frm_validate_entry', array( 'Activelead_Integrations', 'formidable_validate_entry' ), 10, 2 );
		add_action( 'woocommerce_after_checkout_validation', array( 'Activelead_Integrations', 'woocommerce_checkout' ), 10, 2 );
		add_filter( 'woocommerce_registration_errors', array( 'Activelead_Integrations', 'woocommerce_registration' ), 10, 3 );

		// Privacy: exporter and eraser of the stored trace data; the policy text is added in admin_init.
		add_filter( 'wp_privacy_personal_data_exporters', array( 'Activelead_Privacy', 'register_exporter' ) );
		add_filter( 'wp_privacy_personal_data_erasers', array( 'Activelead_Privacy', 'register_eraser' ) );
		add_action( 'admin_init', array( 'Activelead_Privacy', 'add_policy_content' ) );
	}

	/**
	 * Load translations.
	 *
	 * @return void
	 */
	public static function load_textdomain() {
		load_plugin_textdomain( 'activelead', false, dirname( plugin_basename( ACTIVELEAD_PLUGIN_FILE ) ) . '/languages' );
	}

	/**
	 * Activation: store the defaults on this site, or on every site of a network activation.
	 *
	 * @param bool $network_wide Whether activated for the whole network.
	 * @return void
	 */
	public static function activate( $network_wide = false ) {
		if ( is_multisite() && $network_wide ) {
			foreach ( get_sites(
				array(
					'fields' => 'ids',
					'number' => 0,
				)
			) as $site_id ) {
				switch_to_blog( (int) $site_id );
				self::add_default_options();
				restore_current_blog();
			}
			return;
		}
		self::add_default_options();
	}

	/**
	 * A site created after a network activation gets the defaults too.
	 *
	 * @param WP_Site $site The new site.
	 * @return void
	 */
	public static function initialize_site( $site ) {
		if ( ! function_exists( 'is_plugin_active_for_network' ) ) {
			require_once ABSPATH . 'wp-admin/includes/plugin.php';
		}
		if ( is_plugin_active_for_network( plugin_basename( ACTIVELEAD_PLUGIN_FILE ) ) ) {
			switch_to_blog( (int) $site->blog_id );
			self::add_default_options();
			restore_current_blog();
		}
	}

	/**
	 * Store the defaults once (add_option does nothing when the option exists).
	 *
	 * @return void
	 */
	private static function add_default_options() {
		add_option( Activelead_Settings::OPTION, Activelead_Settings::defaults() );
	}

	/**
	 * Whether the current visitor is someone the plugin never blocks (administrators, editors).
	 *
	 * @return bool
	 */
	public static function is_trusted_user() {
		return is_user_logged_in() && ( current_user_can( 'moderate_comments' ) || current_user_can( 'edit_others_posts' ) );
	}

	/**
	 * Score one submission and decide what to do with it.
	 *
	 * Input keys: form_id, integration, email, name, content, fields (more name => value),
	 * page_url, honeypot (bool, optional: read from the POST otherwise).
	 * Result: decision (allowed|review|blocked, as scored), action (allow|hold|block, what the
	 * plugin does given the mode), trace_id, score, labels, lead_id, error, skipped.
	 *
	 * @param array<string, mixed> $input What the form carried.
	 * @return array<string, mixed>
	 */
	public static function check( array $input ) {
		$lead_id = wp_generate_uuid4();
		$result  = array(
			'decision' => 'allowed',
			'action'   => 'allow',
			'trace_id' => '',
			'score'    => 0,
			'labels'   => array(),
			'lead_id'  => $lead_id,
			'error'    => '',
			'skipped'  => false,
			'mode'     => (string) Activelead_Settings::get( 'mode' ),
			'form_id'  => isset( $input['form_id'] ) ? (string) $input['form_id'] : '',
		);
		if ( self::is_trusted_user() ) {
			$result['skipped'] = true;
			return $result;
		}
		$client = new Activelead_Client();
		if ( ! $client->configured() ) {
			$result['skipped'] = true;
			return $result;
		}
		// phpcs:ignore WordPress.Security.NonceVerification.Missing -- public forms carry no nonce by design (cache-safe).
		$honeypot = isset( $input['honeypot'] ) ? (bool) $input['honeypot'] : ( isset( $_POST[ self::HONEYPOT_FIELD ] ) && '' !== $_POST[ self::HONEYPOT_FIELD ] );
		$response = $client->ingest( self::submission( $input, $lead_id, $honeypot ) );
		if ( $response['ok'] && isset( $response['body']['decision'] ) ) {
			$body               = $response['body'];
			$result['decision'] = in_array( $body['decision'], array( 'allowed', 'review', 'blocked' ), true ) ? $body['decision'] : 'allowed';
			$result['trace_id'] = isset( $body['traceId'] ) ? (string) $body['traceId'] : '';
			$result['score']    = isset( $body['score'] ) ? (int) $body['score'] : 0;
			$result['labels']   = isset( $body['labels'] ) && is_array( $body['labels'] ) ? array_values( array_map( 'strval', $body['labels'] ) ) : array();
		} else {
			// The service is down, slow, out of credits or refuses the key: follow the fail policy.
			$result['error']    = $response['error'];
			$result['labels']   = array( 'degraded' );
			$result['decision'] = 'closed' === Activelead_Settings::get( 'fail_mode' ) ? 'blocked' : 'allowed';
			if ( $honeypot ) {
				// A filled honeypot needs no service to tell it is a bot.
				$result['decision'] = 'blocked';
				$result['labels'][] = 'honeypot';
			}
		}
		if ( 'enforce' === $result['mode'] ) {
			$result['action'] = array(
				'allowed' => 'allow',
				'review'  => 'hold',
				'blocked' => 'block',
			)[ $result['decision'] ];
		}
		self::count( $result['decision'] );
		return $result;
	}

	/**
	 * The ingest body for one submission.
	 *
	 * @param array<string, mixed> $input    What the form carried (see check()).
	 * @param string               $lead_id  Lead id.
	 * @param bool                 $honeypot Whether the honeypot was filled.
	 * @return array<string, mixed>
	 */
	public static function submission( array $input, $lead_id, $honeypot ) {
		$fields = array();
		foreach ( array( 'name', 'content' ) as $key ) {
			if ( isset( $input[ $key ] ) && '' !== (string) $input[ $key ] ) {
				$fields[ $key ] = (string) $input[ $key ];
			}
		}
		if ( isset( $input['fields'] ) && is_array( $input['fields'] ) ) {
			foreach ( $input['fields'] as $name => $value ) {
				if ( is_scalar( $value ) && '' !== (string) $value && count( $fields ) < 150 ) {
					$fields[ substr( (string) $name, 0, 200 ) ] = (string) $value;
				} elseif ( is_array( $value ) && count( $fields ) < 150 ) {
					$fields[ substr( (string) $name, 0, 200 ) ] = implode( ', ', array_map( 'strval', array_filter( $value, 'is_scalar' ) ) );
				}
			}
		}
		$server  = wp_unslash( $_SERVER );
		$headers = array();
		foreach ( array(
			'HTTP_ACCEPT_LANGUAGE' => 'accept-language',
			'HTTP_ACCEPT'          => 'accept',
		) as $var => $name ) {
			if ( ! empty( $server[ $var ] ) ) {
				$headers[ $name ] = substr( (string) $server[ $var ], 0, 1000 );
			}
		}
		// phpcs:ignore WordPress.Security.NonceVerification.Missing -- the token is verified by the service.
		$token = isset( $_POST[ self::TOKEN_FIELD ] ) ? sanitize_text_field( wp_unslash( $_POST[ self::TOKEN_FIELD ] ) ) : '';
		$body  = array(
			'formId'    => substr( isset( $input['form_id'] ) ? (string) $input['form_id'] : 'wordpress', 0, 200 ),
			'leadId'    => (string) $lead_id,
			'ip'        => self::client_ip(),
			'email'     => substr( isset( $input['email'] ) ? (string) $input['email'] : '', 0, 320 ),
			'userAgent' => substr( isset( $server['HTTP_USER_AGENT'] ) ? (string) $server['HTTP_USER_AGENT'] : '', 0, 2000 ),
			'pageUrl'   => substr( isset( $input['page_url'] ) ? (string) $input['page_url'] : self::current_url(), 0, 2000 ),
			'referrer'  => substr( isset( $server['HTTP_REFERER'] ) ? (string) $server['HTTP_REFERER'] : '', 0, 2000 ),
			'fields'    => (object) $fields,
			'headers'   => (object) $headers,
			'metadata'  => array(
				'source'      => 'wordpress',
				'integration' => isset( $input['integration'] ) ? (string) $input['integration'] : '',
				'site'        => home_url(),
				'plugin'      => ACTIVELEAD_VERSION,
			),
			'signals'   => array( 'honeypotFilled' => (bool) $honeypot ),
		);
		if ( '' !== $token ) {
			$body['token'] = substr( $token, 0, 2000 );
		}
		return $body;
	}

	/**
	 * The page the form was posted from (the referrer), else the current request URL.
	 *
	 * @return string
	 */
	private static function current_url() {
		$referer = wp_get_raw_referer();
		if ( $referer ) {
			return (string) $referer;
		}
		$uri = isset( $_SERVER['REQUEST_URI'] ) ? sanitize_text_field( wp_unslash( $_SERVER['REQUEST_URI'] ) ) : '/';
		return home_url( $uri );
	}

	/**
	 * The visitor's IP: REMOTE_ADDR, or, when that is a trusted proxy, the right-most address in
	 * X-Forwarded-For that is not itself a trusted proxy (left-most entries are client-controlled).
	 *
	 * @return string
	 */
	public static function client_ip() {
		$remote = isset( $_SERVER['REMOTE_ADDR'] ) ? sanitize_text_field( wp_unslash( $_SERVER['REMOTE_ADDR'] ) ) : '';
		if ( ! filter_var( $remote, FILTER_VALIDATE_IP ) ) {
			return '';
		}
		$trusted = preg_split( '/[\s,]+/', (string) Activelead_Settings::get( 'trusted_proxies' ), -1, PREG_SPLIT_NO_EMPTY );
		if ( empty( $trusted ) || ! self::ip_in_list( $remote, $trusted ) || empty( $_SERVER['HTTP_X_FORWARDED_FOR'] ) ) {
			return $remote;
		}
		$hops = array_reverse( array_map( 'trim', explode( ',', sanitize_text_field( wp_unslash( $_SERVER['HTTP_X_FORWARDED_FOR'] ) ) ) ) );
		foreach ( $hops as $hop ) {
			if ( ! filter_var( $hop, FILTER_VALIDATE_IP ) ) {
				break;
			}
			if ( ! self::ip_in_list( $hop, $trusted ) ) {
				return $hop;
			}
			$remote = $hop;
		}
		return $remote;
	}

	/**
	 * Whether an IP is in one of the addresses / CIDR ranges.
	 *
	 * @param string   $ip    Address.
	 * @param string[] $cidrs Addresses or ranges.
	 * @return bool
	 */
	public static function ip_in_list( $ip, array $cidrs ) {
		$packed = inet_pton( $ip );
		if ( false === $packed ) {
			return false;
		}
		foreach ( $cidrs as $cidr ) {
			$parts = explode( '/', $cidr, 2 );
			$net   = inet_pton( $parts[0] );
			if ( false === $net || strlen( $net ) !== strlen( $packed ) ) {
				continue;
			}
			$bits = isset( $parts[1] ) ? (int) $parts[1] : strlen( $net ) * 8;
			$full = intdiv( $bits, 8 );
			if ( substr( $packed, 0, $full ) !== substr( $net, 0, $full ) ) {
				continue;
			}
			$rest = $bits % 8;
			if ( 0 === $rest || ( ( ord( $packed[ $full ] ) ^ ord( $net[ $full ] ) ) & ( 0xff << ( 8 - $rest ) ) & 0xff ) === 0 ) {
				return true;
			}
		}
		return false;
	}

	/**
	 * Whether a string is an IP address or a CIDR range.
	 *
	 * @param string $entry Candidate.
	 * @return bool
	 */
	public static function valid_cidr( $entry ) {
		$parts = explode( '/', $entry, 2 );
		$net   = inet_pton( $parts[0] );
		if ( false === $net ) {
			return false;
		}
		if ( ! isset( $parts[1] ) ) {
			return true;
		}
		return ctype_digit( $parts[1] ) && (int) $parts[1] <= strlen( $net ) * 8;
	}

	/**
	 * Count today's decisions for the dashboard widget.
	 *
	 * @param string $decision allowed, review or blocked.
	 * @return void
	 */
	private static function count( $decision ) {
		$today = current_time( 'Y-m-d' );
		$stats = get_option( Activelead_Settings::STATS_OPTION, array() );
		if ( ! is_array( $stats ) || ! isset( $stats['day'] ) || $stats['day'] !== $today ) {
			$stats = array(
				'day'     => $today,
				'allowed' => 0,
				'review'  => 0,
				'blocked' => 0,
			);
		}
		$stats[ $decision ] = ( isset( $stats[ $decision ] ) ? (int) $stats[ $decision ] : 0 ) + 1;
		update_option( Activelead_Settings::STATS_OPTION, $stats, false );
	}

	/**
	 * The text shown to a visitor whose submission was refused.
	 *
	 * @return string
	 */
	public static function blocked_message() {
		$message = (string) Activelead_Settings::get( 'blocked_message' );
		return '' !== $message ? $message : __( 'Your submission looks like spam and was not accepted.', 'activelead' );
	}

	/**
	 * The hidden honeypot field: bots fill every input, people never see this one.
	 *
	 * @return void
	 */
	public static function render_honeypot() {
		if ( is_user_logged_in() ) {
			return;
		}
		printf(
			'<p class="activelead-hp" aria-hidden="true" style="position:absolute;left:-10000px;top:auto;width:1px;height:1px;overflow:hidden;"><label for="%1$s">%2$s</label><input type="text" id="%1$s" name="%1$s" value="" tabindex="-1" autocomplete="off" /></p>',
			esc_attr( self::HONEYPOT_FIELD ),
			esc_html__( 'Leave this field empty', 'activelead' )
		);
	}

	/**
	 * The honeypot on the login form, only when login protection is on.
	 *
	 * @return void
	 */
	public static function render_login_honeypot() {
		if ( Activelead_Settings::enabled( 'login' ) ) {
			self::render_honeypot();
		}
	}

	/**
	 * Enqueue the browser snippet when a snippet URL is configured.
	 *
	 * @return void
	 */
	public static function enqueue_snippet() {
		$url = (string) Activelead_Settings::get( 'snippet_url' );
		if ( '' !== $url ) {
			wp_enqueue_script( 'activelead-snippet', $url, array(), ACTIVELEAD_VERSION, true );
		}
	}

	/**
	 * Make the snippet's tag async and give it the site key (WordPress 6.1 has no script strategies).
	 *
	 * @param string $tag    The script tag.
	 * @param string $handle Its handle.
	 * @return string
	 */
	public static function snippet_tag( $tag, $handle ) {
		if ( 'activelead-snippet' !== $handle ) {
			return $tag;
		}
		$site = (string) Activelead_Settings::get( 'site_key' );
		$attr = ' async data-activelead' . ( '' !== $site ? ' data-site="' . esc_attr( $site ) . '"' : '' );
		return preg_replace( '/<script\b/', '<script' . $attr, $tag, 1 );
	}

	/**
	 * Score a comment before WordPress stores it.
	 *
	 * @param array<string, mixed> $commentdata Comment data.
	 * @return array<string, mixed>
	 */
	public static function preprocess_comment( $commentdata ) {
		self::$pending_comment = null;
		if ( ! Activelead_Settings::enabled( 'comments' ) || ! is_array( $commentdata ) ) {
			return $commentdata;
		}
		$post_id = isset( $commentdata['comment_post_ID'] ) ? (int) $commentdata['comment_post_ID'] : 0;
		$type    = isset( $commentdata['comment_type'] ) && '' !== $commentdata['comment_type'] ? (string) $commentdata['comment_type'] : 'comment';
		$result  = self::check(
			array(
				'form_id'     => 'wp-' . $type,
				'integration' => 'comments',
				'email'       => isset( $commentdata['comment_author_email'] ) ? (string) $commentdata['comment_author_email'] : '',
				'name'        => isset( $commentdata['comment_author'] ) ? (string) $commentdata['comment_author'] : '',
				'content'     => isset( $commentdata['comment_content'] ) ? (string) $commentdata['comment_content'] : '',
				'fields'      => array( 'url' => isset( $commentdata['comment_author_url'] ) ? (string) $commentdata['comment_author_url'] : '' ),
				'page_url'    => $post_id ? (string) get_permalink( $post_id ) : '',
			)
		);
		if ( ! $result['skipped'] ) {
			self::$pending_comment = $result;
		}
		return $commentdata;
	}

	/**
	 * Act on the comment's result: refuse it, mark it spam, or hold it for moderation.
	 *
	 * @param int|string|WP_Error  $approved    WordPress's own decision.
	 * @param array<string, mixed> $commentdata Comment data.
	 * @return int|string|WP_Error
	 */
	public static function pre_comment_approved( $approved, $commentdata = array() ) {
		$result = self::$pending_comment;
		if ( null === $result || is_wp_error( $approved ) || 'spam' === $approved || 'trash' === $approved ) {
			return $approved;
		}
		if ( 'block' === $result['action'] ) {
			$action = (string) Activelead_Settings::get( 'blocked_action' );
			if ( 'reject' === $action ) {
				self::$pending_comment = null;
				return new WP_Error( 'activelead_blocked', esc_html( self::blocked_message() ), 403 );
			}
			return 'hold' === $action ? 0 : 'spam';
		}
		if ( 'hold' === $result['action'] ) {
			return 0;
		}
		return $approved;
	}

	/**
	 * Store the result with the new comment.
	 *
	 * @param int $comment_id Comment id.
	 * @return void
	 */
	public static function comment_post( $comment_id ) {
		if ( null === self::$pending_comment ) {
			return;
		}
		self::store_comment_result( (int) $comment_id, self::$pending_comment );
		self::$pending_comment = null;
	}

	/**
	 * Comment meta: the whole result, and the trace id alone for look-ups.
	 *
	 * @param int                  $comment_id Comment id.
	 * @param array<string, mixed> $result     Result of check().
	 * @return void
	 */
	public static function store_comment_result( $comment_id, array $result ) {
		$stored = array_intersect_key( $result, array_flip( array( 'decision', 'action', 'trace_id', 'score', 'labels', 'lead_id', 'error', 'mode' ) ) );
		$stored['time'] = time();
		update_comment_meta( $comment_id, self::META_KEY, $stored );
		if ( '' !== $result['trace_id'] ) {
			update_comment_meta( $comment_id, self::META_TRACE, $result['trace_id'] );
		}
	}

	/**
	 * A moderator marked a comment spam or not spam: tell the service.
	 *
	 * @param string     $new_status New status.
	 * @param string     $old_status Old status.
	 * @param WP_Comment $comment    The comment.
	 * @return void
	 */
	public static function comment_status_changed( $new_status, $old_status, $comment ) {
		if ( $new_status === $old_status || ! is_object( $comment ) ) {
			return;
		}
		if ( 'spam' === $new_status ) {
			$verdict = 'spam';
		} elseif ( 'spam' === $old_status && in_array( $new_status, array( 'approved', 'unapproved' ), true ) ) {
			$verdict = 'ham';
		} else {
			return;
		}
		$trace_id = (string) get_comment_meta( (int) $comment->comment_ID, self::META_TRACE, true );
		if ( '' === $trace_id ) {
			return;
		}
		$response = ( new Activelead_Client() )->feedback( $trace_id, $verdict );
		update_comment_meta(
			(int) $comment->comment_ID,
			'activelead_feedback',
			array(
				'verdict' => $verdict,
				'sent'    => $response['ok'],
				'error'   => $response['error'],
				'time'    => time(),
			)
		);
	}

	/**
	 * Refuse a registration the service blocks.
	 *
	 * @param WP_Error $errors Errors so far.
	 * @param string   $login  User login.
	 * @param string   $email  E-mail.
	 * @return WP_Error
	 */
	public static function registration_errors( $errors, $login, $email ) {
		self::$pending_user = null;
		if ( ! Activelead_Settings::enabled( 'registration' ) || ! is_wp_error( $errors ) || $errors->has_errors() ) {
			return $errors;
		}
		$result = self::check(
			array(
				'form_id'     => 'wp-register',
				'integration' => 'registration',
				'email'       => (string) $email,
				'name'        => (string) $login,
			)
		);
		if ( 'block' === $result['action'] ) {
			$errors->add( 'activelead_blocked', '<strong>' . esc_html__( 'Error:', 'activelead' ) . '</strong> ' . esc_html( self::blocked_message() ) );
		} elseif ( ! $result['skipped'] ) {
			self::$pending_user = $result;
		}
		return $errors;
	}

	/**
	 * Keep the registration's result with the new user.
	 *
	 * @param int $user_id New user.
	 * @return void
	 */
	public static function user_register( $user_id ) {
		if ( null !== self::$pending_user ) {
			update_user_meta( (int) $user_id, self::META_KEY, array_intersect_key( self::$pending_user, array_flip( array( 'decision', 'trace_id', 'score', 'labels', 'lead_id' ) ) ) );
			self::$pending_user = null;
		}
	}

	/**
	 * Optional login protection, on `wp_authenticate_user`: WordPress has found the account named
	 * in the form and has not checked the password yet.
	 *
	 * - Unknown user names never get here (WordPress refuses them without a call).
	 * - "Administrators are never blocked" is decided on the account being logged into, before
	 *   the password is known: an attempt on an account that can `moderate_comments` or
	 *   `edit_others_posts` is not scored at all, whoever makes it, so a false positive can never
	 *   lock out the people who can change the settings. Those accounts rely on their password
	 *   (and on whatever else limits login attempts).
	 * - Every other account's attempt is scored before the password check and a blocked attempt
	 *   is refused whatever the password: a bot learns nothing about the password from the answer.
	 *
	 * @param WP_User|WP_Error $user     The user, or an error.
	 * @param string           $password Password (unused).
	 * @return WP_User|WP_Error
	 */
	public static function authenticate_user( $user, $password = '' ) {
		unset( $password );
		if ( ! Activelead_Settings::enabled( 'login' ) || ! ( $user instanceof WP_User ) ) {
			return $user;
		}
		if ( self::is_privileged_account( $user ) ) {
			return $user;
		}
		$result = self::check(
			array(
				'form_id'     => 'wp-login',
				'integration' => 'login',
				'email'       => (string) $user->user_email,
				'name'        => (string) $user->user_login,
			)
		);
		if ( 'block' === $result['action'] ) {
			return new WP_Error( 'activelead_blocked', '<strong>' . esc_html__( 'Error:', 'activelead' ) . '</strong> ' . esc_html( self::login_blocked_message() ) );
		}
		return $user;
	}

	/**
	 * Whether an account is one the login protection never checks (administrators, editors; on
	 * multisite also super admins).
	 *
	 * @param WP_User $user The account.
	 * @return bool
	 */
	public static function is_privileged_account( WP_User $user ) {
		return is_super_admin( $user->ID ) || user_can( $user, 'moderate_comments' ) || user_can( $user, 'edit_others_posts' );
	}

	/**
	 * The text shown when a login attempt is refused.
	 *
	 * @return string
	 */
	public static function login_blocked_message() {
		return __( 'This login attempt looks automated and was refused by the site\'s spam protection. If you are a person, try again from another network or contact the site\'s administrator.', 'activelead' );
	}

	/**
	 * Refuse a password-reset request the service blocks (stops reset-mail floods).
	 *
	 * @param WP_Error $errors Errors so far.
	 * @return void
	 */
	public static function lostpassword_post( $errors ) {
		if ( ! Activelead_Settings::enabled( 'lostpassword' ) || ! is_wp_error( $errors ) || $errors->has_errors() ) {
			return;
		}
		// phpcs:ignore WordPress.Security.NonceVerification.Missing -- core's own form, which has no nonce.
		$login  = isset( $_POST['user_login'] ) ? sanitize_text_field( wp_unslash( $_POST['user_login'] ) ) : '';
		$result = self::check(
			array(
				'form_id'     => 'wp-lostpassword',
				'integration' => 'lostpassword',
				'email'       => is_email( $login ) ? $login : '',
				'name'        => is_email( $login ) ? '' : $login,
			)
		);
		if ( 'block' === $result['action'] ) {
			$errors->add( 'activelead_blocked', '<strong>' . esc_html__( 'Error:', 'activelead' ) . '</strong> ' . esc_html( self::blocked_message() ) );
		}
	}
}
