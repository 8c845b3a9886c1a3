<?php
/**
 * The plugin's settings: defaults, the wp-config.php constants that override them, the
 * network-wide fallback on multisite, and the whitelist sanitiser used by the settings page.
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Reads and sanitises the `activelead_settings` option.
 */
class Activelead_Settings {

	const OPTION         = 'activelead_settings';
	const NETWORK_OPTION = 'activelead_network_settings';
	const STATUS_OPTION  = 'activelead_status';
	const STATS_OPTION   = 'activelead_stats';

	const MODES        = array( 'enforce', 'monitor' );
	const ACTIONS      = array( 'reject', 'spam', 'hold' );
	const FAIL_MODES   = array( 'open', 'closed' );
	const INTEGRATIONS = array(
		'comments',
		'registration',
		'login',
		'lostpassword',
		'cf7',
		'wpforms',
		'gravityforms',
		'elementor',
		'ninjaforms',
		'fluentforms',
		'formidable',
		'woocommerce',
	);

	/**
	 * Every setting with its default. Login protection is off by default: a false positive there
	 * locks a real user out, which is worse than a spam comment.
	 *
	 * @return array<string, mixed>
	 */
	public static function defaults() {
		$integrations = array_fill_keys( self::INTEGRATIONS, true );
		$integrations['login'] = false;
		return array(
			'api_key'         => '',
			'api_url'         => 'http://127.0.0.1:8700',
			'mode'            => 'enforce',
			'blocked_action'  => 'spam',
			'blocked_message' => __( 'Your submission looks like spam and was not accepted.', 'activelead' ),
			'fail_mode'       => 'open',
			'timeout'         => 2.0,
			'integrations'    => $integrations,
			'trusted_proxies' => '',
			'snippet_url'     => '',
			'site_key'        => '',
		);
	}

	/**
	 * The effective settings: defaults < this site's option < constants in wp-config.php, with
	 * the API key and the service URL always taken together from one place (see connection()).
	 *
	 * @return array<string, mixed>
	 */
	public static function all() {
		$settings = self::defaults();
		$site     = self::site_option();
		foreach ( $site as $key => $value ) {
			if ( array_key_exists( $key, $settings ) && ! in_array( $key, array( 'api_key', 'api_url' ), true ) ) {
				$settings[ $key ] = $value;
			}
		}
		$settings['integrations'] = array_merge( self::defaults()['integrations'], is_array( $settings['integrations'] ) ? $settings['integrations'] : array() );
		$connection               = self::connection();
		$settings['api_key']      = $connection['api_key'];
		$settings['api_url']      = $connection['api_url'];
		return $settings;
	}

	/**
	 * This site's stored option (an array, possibly empty).
	 *
	 * @return array<string, mixed>
	 */
	public static function site_option() {
		$site = get_option( self::OPTION, array() );
		return is_array( $site ) ? $site : array();
	}

	/**
	 * The network settings (multisite): api_key, api_url, network_wide; empty values otherwise.
	 *
	 * @return array{api_key: string, api_url: string, network_wide: bool}
	 */
	public static function network_option() {
		$network = is_multisite() ? get_site_option( self::NETWORK_OPTION, array() ) : array();
		$network = is_array( $network ) ? $network : array();
		return array(
			'api_key'      => isset( $network['api_key'] ) ? (string) $network['api_key'] : '',
			'api_url'      => isset( $network['api_url'] ) ? (string) $network['api_url'] : '',
			'network_wide' => ! empty( $network['network_wide'] ),
		);
	}

	/**
	 * Which key this site uses, and where it comes from. A key and its service URL always come
	 * from the same place, in this order:
	 * 1. `constant`: ACTIVELEAD_API_KEY (and ACTIVELEAD_API_URL) in wp-config.php;
	 * 2. `network`: the network's key when the network admin ticked "use on every site";
	 * 3. `site`: this site's own key;
	 * 4. `network`: the network's key as the default of a site without its own;
	 * 5. `none`: no key (nothing is checked).
	 * An empty URL means the default one.
	 *
	 * @return array{api_key: string, api_url: string, source: string}
	 */
	public static function connection() {
		$site    = self::site_option();
		$network = self::network_option();
		$default = self::defaults()['api_url'];
		$own_key = isset( $site['api_key'] ) ? (string) $site['api_key'] : '';
		$own_url = isset( $site['api_url'] ) ? (string) $site['api_url'] : '';
		if ( '' !== $network['api_key'] && ( $network['network_wide'] || '' === $own_key ) ) {
			$out = array(
				'api_key' => $network['api_key'],
				'api_url' => '' !== $network['api_url'] ? $network['api_url'] : $default,
				'source'  => 'network',
			);
		} else {
			$out = array(
				'api_key' => $own_key,
				'api_url' => '' !== $own_url ? $own_url : $default,
				'source'  => '' !== $own_key ? 'site' : 'none',
			);
		}
		if ( defined( 'ACTIVELEAD_API_KEY' ) && is_string( ACTIVELEAD_API_KEY ) ) {
			$out['api_key'] = ACTIVELEAD_API_KEY;
			$out['source']  = 'constant';
		}
		if ( defined( 'ACTIVELEAD_API_URL' ) && is_string( ACTIVELEAD_API_URL ) ) {
			$out['api_url'] = ACTIVELEAD_API_URL;
		}
		return $out;
	}

	/**
	 * Whether the network admin fixed the key of every site (the site's key fields are hidden).
	 *
	 * @return bool
	 */
	public static function network_enforced() {
		$network = self::network_option();
		return $network['network_wide'] && '' !== $network['api_key'];
	}

	/**
	 * One effective setting.
	 *
	 * @param string $key Setting name.
	 * @return mixed
	 */
	public static function get( $key ) {
		$all = self::all();
		return isset( $all[ $key ] ) ? $all[ $key ] : null;
	}

	/**
	 * Whether an integration's switch is on.
	 *
	 * @param string $name Integration name from INTEGRATIONS.
	 * @return bool
	 */
	public static function enabled( $name ) {
		$integrations = self::get( 'integrations' );
		return ! empty( $integrations[ $name ] );
	}

	/**
	 * Whether a setting is fixed by a constant in wp-config.php (its field is then hidden).
	 *
	 * @param string $key api_key or api_url.
	 * @return bool
	 */
	public static function is_constant( $key ) {
		return ( 'api_key' === $key && defined( 'ACTIVELEAD_API_KEY' ) ) || ( 'api_url' === $key && defined( 'ACTIVELEAD_API_URL' ) );
	}

	/**
	 * Whether an API key looks like one (al_live_<id>_<secret+checksum>); the service checks the rest.
	 *
	 * @param string $key Candidate key.
	 * @return bool
	 */
	public static function is_key_shaped( $key ) {
		return 1 === preg_match( '/^al_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{38}$/', $key );
	}

	/**
	 * The settings page's sanitiser: only whitelisted keys survive, each validated; a bad value
	 * keeps the previous one and reports a settings error.
	 *
	 * @param mixed $input Raw POSTed array.
	 * @return array<string, mixed>
	 */
	public static function sanitize( $input ) {
		$old = get_option( self::OPTION, array() );
		$out = array_merge( self::defaults(), is_array( $old ) ? $old : array() );
		if ( ! is_array( $input ) ) {
			return $out;
		}
		if ( isset( $input['api_key'] ) && ! self::is_constant( 'api_key' ) ) {
			$key = trim( sanitize_text_field( wp_unslash( $input['api_key'] ) ) );
			if ( '' === $key || self::is_key_shaped( $key ) ) {
				$out['api_key'] = $key;
			} else {
				add_settings_error( self::OPTION, 'activelead_api_key', __( 'The API key is not an Activelead API key (it starts with al_live_).', 'activelead' ) );
			}
		}
		if ( isset( $input['api_url'] ) && ! self::is_constant( 'api_url' ) ) {
			$raw  = trim( (string) wp_unslash( $input['api_url'] ) );
			$url  = esc_url_raw( $raw, array( 'http', 'https' ) );
			$host = '' === $url ? '' : wp_parse_url( $url, PHP_URL_HOST );
			if ( '' === $raw ) {
				$out['api_url'] = ''; // The default URL (or, without an own key, the network's).
			} elseif ( is_string( $host ) && '' !== $host ) {
				$out['api_url'] = untrailingslashit( $url );
			} else {
				add_settings_error( self::OPTION, 'activelead_api_url', __( 'The service URL must be an http:// or https:// URL.', 'activelead' ) );
			}
		}
		foreach ( array(
			'mode'           => self::MODES,
			'blocked_action' => self::ACTIONS,
			'fail_mode'      => self::FAIL_MODES,
		) as $key => $allowed ) {
			if ( isset( $input[ $key ] ) ) {
				$value = sanitize_key( wp_unslash( $input[ $key ] ) );
				if ( in_array( $value, $allowed, true ) ) {
					$out[ $key ] = $value;
				} else {
					/* translators: %s: the name of a setting. */
					add_settings_error( self::OPTION, 'activelead_' . $key, sprintf( __( 'Invalid value for %s.', 'activelead' ), $key ) );
				}
			}
		}
		if ( isset( $input['timeout'] ) ) {
			$timeout = is_numeric( $input['timeout'] ) ? (float) $input['timeout'] : -1.0;
			if ( $timeout >= 0.2 && $timeout <= 10.0 ) {
				$out['timeout'] = round( $timeout, 1 );
			} else {
				add_settings_error( self::OPTION, 'activelead_timeout', __( 'The timeout must be between 0.2 and 10 seconds.', 'activelead' ) );
			}
		}
		if ( isset( $input['blocked_message'] ) ) {
			$out['blocked_message'] = sanitize_text_field( wp_unslash( $input['blocked_message'] ) );
		}
		if ( isset( $input['trusted_proxies'] ) ) {
			$proxies = array();
			foreach ( preg_split( '/[\s,]+/', (string) wp_unslash( $input['trusted_proxies'] ), -1, PREG_SPLIT_NO_EMPTY ) as $entry ) {
				if ( Activelead::valid_cidr( $entry ) ) {
					$proxies[] = $entry;
				} else {
					/* translators: %s: what the admin typed. */
					add_settings_error( self::OPTION, 'activelead_trusted_proxies', sprintf( __( 'Not an IP address or CIDR range: %s', 'activelead' ), $entry ) );
				}
			}
			$out['trusted_proxies'] = implode( ', ', $proxies );
		}
		if ( isset( $input['snippet_url'] ) ) {
			$out['snippet_url'] = esc_url_raw( trim( wp_unslash( $input['snippet_url'] ) ), array( 'http', 'https' ) );
		}
		if ( isset( $input['site_key'] ) ) {
			$out['site_key'] = preg_replace( '/[^A-Za-z0-9_\-]/', '', (string) wp_unslash( $input['site_key'] ) );
		}
		// Checkboxes: an unticked box is absent from the POST, so every integration is set here.
		if ( isset( $input['integrations_present'] ) ) {
			$posted = isset( $input['integrations'] ) && is_array( $input['integrations'] ) ? $input['integrations'] : array();
			foreach ( self::INTEGRATIONS as $name ) {
				$out['integrations'][ $name ] = ! empty( $posted[ $name ] );
			}
		}
		return array_intersect_key( $out, self::defaults() );
	}
}
