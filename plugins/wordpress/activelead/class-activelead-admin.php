<?php
/**
 * Admin side, loaded only under is_admin(): the Settings → Activelead page (Settings API),
 * "Test connection", the network settings page, admin notices, the dashboard widget and the
 * Activelead column of the comments list.
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Admin hooks.
 */
class Activelead_Admin {

	const PAGE       = 'activelead';
	const CAPABILITY = 'manage_options';

	/**
	 * Seconds between two credit-balance look-ups from the admin screens.
	 */
	const CREDITS_TTL = 3600;

	/**
	 * Transient set while the last credit-balance look-up is fresh.
	 */
	const CREDITS_TRANSIENT = 'activelead_credits_checked';

	/**
	 * Whether init() ran.
	 *
	 * @var bool
	 */
	private static $initiated = false;

	/**
	 * Register every admin hook.
	 *
	 * @return void
	 */
	public static function init() {
		if ( self::$initiated ) {
			return;
		}
		self::$initiated = true;
		add_action( 'admin_init', array( __CLASS__, 'register_settings' ) );
		add_action( 'admin_menu', array( __CLASS__, 'add_menu' ) );
		add_action( 'network_admin_menu', array( __CLASS__, 'add_network_menu' ) );
		add_action( 'network_admin_edit_activelead_network', array( __CLASS__, 'save_network_settings' ) );
		add_action( 'admin_post_activelead_test_connection', array( __CLASS__, 'test_connection' ) );
		add_action( 'admin_notices', array( __CLASS__, 'notices' ) );
		add_action( 'load-index.php', array( __CLASS__, 'maybe_refresh_credits' ) );
		add_action( 'update_option_' . Activelead_Settings::OPTION, array( __CLASS__, 'settings_updated' ), 10, 2 );
		add_action( 'load-settings_page_' . self::PAGE, array( __CLASS__, 'maybe_refresh_credits' ) );
		add_action( 'wp_dashboard_setup', array( __CLASS__, 'add_dashboard_widget' ) );
		add_filter( 'manage_edit-comments_columns', array( __CLASS__, 'comment_columns' ) );
		add_action( 'manage_comments_custom_column', array( __CLASS__, 'comment_column' ), 10, 2 );
		add_filter( 'plugin_action_links_' . plugin_basename( ACTIVELEAD_PLUGIN_FILE ), array( __CLASS__, 'action_links' ) );
	}

	/**
	 * One option, saved through options.php (which checks the capability and the nonce).
	 *
	 * @return void
	 */
	public static function register_settings() {
		register_setting(
			self::PAGE,
			Activelead_Settings::OPTION,
			array(
				'type'              => 'array',
				'sanitize_callback' => array( 'Activelead_Settings', 'sanitize' ),
				'default'           => Activelead_Settings::defaults(),
			)
		);
	}

	/**
	 * Settings → Activelead.
	 *
	 * @return void
	 */
	public static function add_menu() {
		add_options_page( __( 'Activelead', 'activelead' ), __( 'Activelead', 'activelead' ), self::CAPABILITY, self::PAGE, array( __CLASS__, 'render_settings_page' ) );
	}

	/**
	 * Network Settings → Activelead (multisite).
	 *
	 * @return void
	 */
	public static function add_network_menu() {
		add_submenu_page( 'settings.php', __( 'Activelead', 'activelead' ), __( 'Activelead', 'activelead' ), 'manage_network_options', self::PAGE . '-network', array( __CLASS__, 'render_network_page' ) );
	}

	/**
	 * Link to the settings from the plugins list.
	 *
	 * @param string[] $links Links.
	 * @return string[]
	 */
	public static function action_links( $links ) {
		array_unshift( $links, '<a href="' . esc_url( admin_url( 'options-general.php?page=' . self::PAGE ) ) . '">' . esc_html__( 'Settings', 'activelead' ) . '</a>' );
		return $links;
	}

	/**
	 * The settings page.
	 *
	 * @return void
	 */
	public static function render_settings_page() {
		if ( ! current_user_can( self::CAPABILITY ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to manage these settings.', 'activelead' ), 403 );
		}
		$settings   = Activelead_Settings::all();
		$own        = Activelead_Settings::site_option();
		$connection = Activelead_Settings::connection();
		$status     = get_option( Activelead_Settings::STATUS_OPTION, array() );
		$test     = get_transient( 'activelead_test_' . get_current_user_id() );
		if ( false !== $test ) {
			delete_transient( 'activelead_test_' . get_current_user_id() );
		}
		include ACTIVELEAD_PLUGIN_DIR . 'views/settings.php';
	}

	/**
	 * The network settings page.
	 *
	 * @return void
	 */
	public static function render_network_page() {
		if ( ! current_user_can( 'manage_network_options' ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to manage these settings.', 'activelead' ), 403 );
		}
		$network = get_site_option( Activelead_Settings::NETWORK_OPTION, array() );
		$network = array_merge(
			array(
				'api_key'      => '',
				'api_url'      => '',
				'network_wide' => false,
			),
			is_array( $network ) ? $network : array()
		);
		include ACTIVELEAD_PLUGIN_DIR . 'views/network.php';
	}

	/**
	 * Save the network settings: capability, nonce, whitelist.
	 *
	 * @return void
	 */
	public static function save_network_settings() {
		if ( ! current_user_can( 'manage_network_options' ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to manage these settings.', 'activelead' ), 403 );
		}
		check_admin_referer( 'activelead_network' );
		$key = isset( $_POST['api_key'] ) ? trim( sanitize_text_field( wp_unslash( $_POST['api_key'] ) ) ) : '';
		$url = isset( $_POST['api_url'] ) ? esc_url_raw( trim( wp_unslash( $_POST['api_url'] ) ), array( 'http', 'https' ) ) : '';
		$ok  = '' === $key || Activelead_Settings::is_key_shaped( $key );
		if ( $ok ) {
			update_site_option(
				Activelead_Settings::NETWORK_OPTION,
				array(
					'api_key'      => $key,
					'api_url'      => untrailingslashit( $url ),
					'network_wide' => ! empty( $_POST['network_wide'] ),
				)
			);
		}
		wp_safe_redirect( add_query_arg( array( 'page' => self::PAGE . '-network', 'updated' => $ok ? '1' : 'invalid-key' ), network_admin_url( 'settings.php' ) ) );
		exit;
	}

	/**
	 * "Test connection": verify the key and fetch the credit balance (GET /v1/credits).
	 *
	 * @return void
	 */
	public static function test_connection() {
		if ( ! current_user_can( self::CAPABILITY ) ) {
			wp_die( esc_html__( 'Sorry, you are not allowed to manage these settings.', 'activelead' ), 403 );
		}
		check_admin_referer( 'activelead_test_connection' );
		$response = ( new Activelead_Client() )->credits();
		set_transient(
			'activelead_test_' . get_current_user_id(),
			array(
				'ok'      => $response['ok'],
				'status'  => $response['status'],
				'error'   => $response['error'],
				'balance' => isset( $response['body']['balance'] ) ? (int) $response['body']['balance'] : null,
				'low'     => ! empty( $response['body']['low'] ),
			),
			300
		);
		wp_safe_redirect( admin_url( 'options-general.php?page=' . self::PAGE ) );
		exit;
	}

	/**
	 * On the dashboard and the settings page, ask the service for the credit balance when the last
	 * answer for the current key is older than CREDITS_TTL (one bounded GET /v1/credits), so the low-credit notice
	 * shows before the credits run out rather than only after a 402.
	 *
	 * @return void
	 */
	public static function maybe_refresh_credits() {
		if ( ! current_user_can( self::CAPABILITY ) ) {
			return;
		}
		$client = new Activelead_Client();
		// Fresh for this key and URL (a new site key, network key or constant asks again at once).
		$connection = Activelead_Settings::connection();
		$for        = md5( $connection['api_url'] . '|' . $connection['api_key'] );
		if ( ! $client->configured() || get_transient( self::CREDITS_TRANSIENT ) === $for ) {
			return;
		}
		// Throttled whether or not the call works: a down service costs one timeout an hour here.
		set_transient( self::CREDITS_TRANSIENT, $for, self::CREDITS_TTL );
		$client->credits(); // The client remembers the balance in the status option.
	}

	/**
	 * A new key or service URL makes the remembered service state (key refused, last error,
	 * balance) stale: forget it.
	 *
	 * @param mixed $old_value Previous option value.
	 * @param mixed $value     New option value.
	 * @return void
	 */
	public static function settings_updated( $old_value, $value ) {
		$old = is_array( $old_value ) ? $old_value : array();
		$new = is_array( $value ) ? $value : array();
		foreach ( array( 'api_key', 'api_url' ) as $key ) {
			if ( ( isset( $old[ $key ] ) ? $old[ $key ] : '' ) !== ( isset( $new[ $key ] ) ? $new[ $key ] : '' ) ) {
				delete_option( Activelead_Settings::STATUS_OPTION );
				delete_transient( self::CREDITS_TRANSIENT );
				return;
			}
		}
	}

	/**
	 * Notices: no key, invalid key, service unreachable (with the last error), low credits.
	 *
	 * @return void
	 */
	public static function notices() {
		if ( ! current_user_can( self::CAPABILITY ) ) {
			return;
		}
		$status   = get_option( Activelead_Settings::STATUS_OPTION, array() );
		$status   = is_array( $status ) ? $status : array();
		$settings = esc_url( admin_url( 'options-general.php?page=' . self::PAGE ) );
		$notices  = array();
		if ( '' === (string) Activelead_Settings::get( 'api_key' ) ) {
			$notices[] = array( 'warning', __( 'Activelead is not protecting this site yet: enter an API key.', 'activelead' ) );
		} elseif ( ! empty( $status['key_invalid'] ) ) {
			$notices[] = array( 'error', __( 'Activelead: the service refuses the API key. Check it on the settings page.', 'activelead' ) );
		} elseif ( ! empty( $status['last_error'] ) ) {
			/* translators: %s: the last error. */
			$notices[] = array( 'error', sprintf( __( 'Activelead: the service could not be reached. Last error: %s', 'activelead' ), $status['last_error'] ) );
		}
		if ( ! empty( $status['credits_out'] ) ) {
			$notices[] = array( 'error', __( 'Activelead: your credits are used up; submissions are not being scored.', 'activelead' ) );
		} elseif ( ! empty( $status['credits_low'] ) ) {
			/* translators: %s: credit balance. */
			$notices[] = array( 'warning', sprintf( __( 'Activelead: credits are running low (%s left).', 'activelead' ), isset( $status['credits'] ) ? (string) $status['credits'] : '?' ) );
		}
		foreach ( $notices as $notice ) {
			printf(
				'<div class="notice notice-%1$s activelead-notice"><p>%2$s <a href="%3$s">%4$s</a></p></div>',
				esc_attr( $notice[0] ),
				esc_html( $notice[1] ),
				esc_url( $settings ),
				esc_html__( 'Settings', 'activelead' )
			);
		}
	}

	/**
	 * The dashboard widget.
	 *
	 * @return void
	 */
	public static function add_dashboard_widget() {
		if ( current_user_can( 'moderate_comments' ) ) {
			wp_add_dashboard_widget( 'activelead_dashboard', __( 'Activelead today', 'activelead' ), array( __CLASS__, 'render_dashboard_widget' ) );
		}
	}

	/**
	 * Today's allowed / held / blocked counts.
	 *
	 * @return void
	 */
	public static function render_dashboard_widget() {
		$stats = get_option( Activelead_Settings::STATS_OPTION, array() );
		if ( ! is_array( $stats ) || ! isset( $stats['day'] ) || current_time( 'Y-m-d' ) !== $stats['day'] ) {
			$stats = array();
		}
		$counts = array(
			'allowed' => isset( $stats['allowed'] ) ? (int) $stats['allowed'] : 0,
			'review'  => isset( $stats['review'] ) ? (int) $stats['review'] : 0,
			'blocked' => isset( $stats['blocked'] ) ? (int) $stats['blocked'] : 0,
		);
		include ACTIVELEAD_PLUGIN_DIR . 'views/dashboard-widget.php';
	}

	/**
	 * The Activelead column of Comments.
	 *
	 * @param string[] $columns Columns.
	 * @return string[]
	 */
	public static function comment_columns( $columns ) {
		$columns['activelead'] = __( 'Activelead', 'activelead' );
		return $columns;
	}

	/**
	 * One comment's result: decision, score, labels, trace id.
	 *
	 * @param string $column     Column.
	 * @param int    $comment_id Comment id.
	 * @return void
	 */
	public static function comment_column( $column, $comment_id ) {
		if ( 'activelead' !== $column ) {
			return;
		}
		$result = get_comment_meta( (int) $comment_id, Activelead::META_KEY, true );
		if ( ! is_array( $result ) ) {
			echo '&mdash;';
			return;
		}
		printf(
			'<span class="activelead-decision activelead-%1$s">%2$s</span> &middot; %3$s %4$d<br /><small>%5$s</small><br /><code class="activelead-trace">%6$s</code>',
			esc_attr( isset( $result['decision'] ) ? (string) $result['decision'] : '' ),
			esc_html( isset( $result['decision'] ) ? (string) $result['decision'] : '' ),
			esc_html__( 'score', 'activelead' ),
			isset( $result['score'] ) ? (int) $result['score'] : 0,
			esc_html( isset( $result['labels'] ) ? implode( ', ', (array) $result['labels'] ) : '' ),
			esc_html( isset( $result['trace_id'] ) ? (string) $result['trace_id'] : '' )
		);
		if ( ! empty( $result['error'] ) ) {
			echo '<br /><small>' . esc_html( (string) $result['error'] ) . '</small>';
		}
	}
}
