<?php
/**
 * Form-plugin integrations. Each method is the callback of one documented hook of that plugin
 * (registered in Activelead::init()); it gathers e-mail, name and message from the plugin's
 * submission data, calls Activelead::check() and answers in the plugin's own way (spam flag,
 * validation error). A hook whose plugin is not installed is never called.
 *
 * @package Activelead
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Callbacks for Contact Form 7, WPForms, Gravity Forms, Elementor Pro, Ninja Forms, Fluent Forms,
 * Formidable and WooCommerce.
 */
class Activelead_Integrations {

	/**
	 * Gravity Forms results by entry id, for the entry note added after submission.
	 *
	 * @var array<string, array<string, mixed>>
	 */
	private static $gform_results = array();

	/**
	 * Pick e-mail, name and message out of a form's name => value pairs by their names and
	 * values; everything else is sent as fields.
	 *
	 * @param array<string|int, mixed> $fields Field name (or label) => value.
	 * @return array{email: string, name: string, content: string, fields: array<string, mixed>}
	 */
	public static function guess( array $fields ) {
		$out = array(
			'email'   => '',
			'name'    => '',
			'content' => '',
			'fields'  => array(),
		);
		foreach ( $fields as $name => $value ) {
			$name = (string) $name;
			if ( '' === $name || '_' === $name[0] ) {
				continue; // Plugin-internal fields (_wpcf7, _wpnonce, ...).
			}
			$text = is_scalar( $value ) ? trim( (string) $value ) : '';
			if ( '' === $out['email'] && '' !== $text && is_email( $text ) ) {
				$out['email'] = $text;
				continue;
			}
			if ( '' === $out['name'] && '' !== $text && preg_match( '/name/i', $name ) ) {
				$out['name'] = $text;
				continue;
			}
			if ( '' === $out['content'] && '' !== $text && preg_match( '/message|comment|content|enquiry|inquiry|body|text/i', $name ) ) {
				$out['content'] = $text;
				continue;
			}
			$out['fields'][ $name ] = $value;
		}
		return $out;
	}

	/**
	 * Run a check for an integration, or return null when its switch is off.
	 *
	 * @param string                   $integration Integration name.
	 * @param string                   $form_id     Form id sent to the service.
	 * @param array<string|int, mixed> $fields      Field name => value.
	 * @return array<string, mixed>|null
	 */
	private static function run( $integration, $form_id, array $fields ) {
		if ( ! Activelead_Settings::enabled( $integration ) ) {
			return null;
		}
		$input                = self::guess( $fields );
		$input['form_id']     = $form_id;
		$input['integration'] = $integration;
		return Activelead::check( $input );
	}

	/**
	 * Contact Form 7: `apply_filters( 'wpcf7_spam', bool $spam, WPCF7_Submission $submission )`.
	 *
	 * @param bool   $spam       Whether an earlier check already found spam.
	 * @param object $submission WPCF7_Submission.
	 * @return bool
	 */
	public static function cf7_spam( $spam, $submission = null ) {
		if ( $spam || ! is_object( $submission ) || ! method_exists( $submission, 'get_posted_data' ) ) {
			return (bool) $spam;
		}
		$form_id = 'cf7';
		if ( method_exists( $submission, 'get_contact_form' ) && is_object( $submission->get_contact_form() ) ) {
			$form_id = 'cf7-' . $submission->get_contact_form()->id();
		}
		$result = self::run( 'cf7', $form_id, (array) $submission->get_posted_data() );
		if ( null === $result || 'block' !== $result['action'] ) {
			return false;
		}
		if ( method_exists( $submission, 'add_spam_log' ) ) {
			$submission->add_spam_log(
				array(
					'agent'  => 'activelead',
					/* translators: 1: score, 2: trace id. */
					'reason' => sprintf( __( 'Activelead score %1$d (trace %2$s)', 'activelead' ), $result['score'], $result['trace_id'] ),
				)
			);
		}
		return true;
	}

	/**
	 * WPForms: `do_action( 'wpforms_process', array $fields, array $entry, array $form_data )`;
	 * an error in `wpforms()->process->errors[ $form_id ]['header']` stops the submission.
	 *
	 * @param array<int, array<string, mixed>> $fields    Fields: id => {name, value, type}.
	 * @param array<string, mixed>             $entry     Raw entry.
	 * @param array<string, mixed>             $form_data Form settings, with id.
	 * @return void
	 */
	public static function wpforms_process( $fields, $entry, $form_data ) {
		unset( $entry );
		$form_id = isset( $form_data['id'] ) ? (int) $form_data['id'] : 0;
		$pairs   = array();
		foreach ( (array) $fields as $id => $field ) {
			$label           = isset( $field['name'] ) && '' !== $field['name'] ? $field['name'] : 'field_' . $id;
			$pairs[ $label ] = isset( $field['value'] ) ? $field['value'] : '';
		}
		$result = self::run( 'wpforms', 'wpforms-' . $form_id, $pairs );
		if ( null !== $result && 'block' === $result['action'] && function_exists( 'wpforms' ) ) {
			wpforms()->process->errors[ $form_id ]['header'] = Activelead::blocked_message();
		}
	}

	/**
	 * Gravity Forms: `apply_filters( 'gform_entry_is_spam', bool $is_spam, array $form, array $entry )`.
	 *
	 * @param bool                 $is_spam Whether already spam.
	 * @param array<string, mixed> $form    Form, with id and fields (objects with id, label).
	 * @param array<string, mixed> $entry   Entry: field id => value.
	 * @return bool
	 */
	public static function gform_entry_is_spam( $is_spam, $form, $entry ) {
		if ( $is_spam ) {
			return true;
		}
		$labels = array();
		foreach ( isset( $form['fields'] ) ? (array) $form['fields'] : array() as $field ) {
			$field = (object) $field;
			if ( isset( $field->id ) ) {
				$labels[ (string) $field->id ] = isset( $field->label ) && '' !== $field->label ? (string) $field->label : 'field_' . $field->id;
			}
		}
		$pairs = array();
		foreach ( (array) $entry as $key => $value ) {
			if ( is_numeric( $key ) ) {
				$base                           = (string) intval( $key );
				$name                           = isset( $labels[ $base ] ) ? $labels[ $base ] : 'field_' . $key;
				$pairs[ $name . ( (string) $key !== $base ? ' ' . $key : '' ) ] = $value;
			}
		}
		$result = self::run( 'gravityforms', 'gform-' . ( isset( $form['id'] ) ? (int) $form['id'] : 0 ), $pairs );
		if ( null === $result ) {
			return false;
		}
		if ( isset( $entry['id'] ) ) {
			self::$gform_results[ (string) $entry['id'] ] = $result;
		} else {
			self::$gform_results['latest'] = $result;
		}
		return 'block' === $result['action'];
	}

	/**
	 * Gravity Forms: `do_action( 'gform_after_submission', array $entry, array $form )` — add the
	 * result as an entry note.
	 *
	 * @param array<string, mixed> $entry Entry, with id.
	 * @param array<string, mixed> $form  Form.
	 * @return void
	 */
	public static function gform_after_submission( $entry, $form ) {
		unset( $form );
		$id     = isset( $entry['id'] ) ? (string) $entry['id'] : '';
		$result = isset( self::$gform_results[ $id ] ) ? self::$gform_results[ $id ] : ( isset( self::$gform_results['latest'] ) ? self::$gform_results['latest'] : null );
		self::$gform_results = array();
		if ( null === $result || '' === $id || ! class_exists( 'GFAPI' ) || ! method_exists( 'GFAPI', 'add_note' ) ) {
			return;
		}
		GFAPI::add_note( (int) $id, 0, 'Activelead', self::note( $result ) );
	}

	/**
	 * Elementor Pro: `do_action( 'elementor_pro/forms/validation', Form_Record $record, Ajax_Handler $ajax_handler )`.
	 *
	 * @param object $record       Form_Record: get( 'fields' ), get_form_settings( $key ).
	 * @param object $ajax_handler Ajax_Handler: add_error( $field_id, $message ), add_error_message( $message ).
	 * @return void
	 */
	public static function elementor_validation( $record, $ajax_handler ) {
		if ( ! is_object( $record ) || ! method_exists( $record, 'get' ) ) {
			return;
		}
		$pairs    = array();
		$first_id = '';
		foreach ( (array) $record->get( 'fields' ) as $id => $field ) {
			$first_id        = '' === $first_id ? (string) $id : $first_id;
			$label           = ! empty( $field['title'] ) ? $field['title'] : ( ! empty( $field['id'] ) ? $field['id'] : (string) $id );
			$pairs[ $label ] = isset( $field['value'] ) ? $field['value'] : '';
		}
		$form_name = method_exists( $record, 'get_form_settings' ) ? (string) $record->get_form_settings( 'id' ) : '';
		$result    = self::run( 'elementor', 'elementor-' . ( '' !== $form_name ? $form_name : 'form' ), $pairs );
		if ( null === $result || 'block' !== $result['action'] || ! is_object( $ajax_handler ) ) {
			return;
		}
		// An error on a field is what makes Elementor refuse the submission; the message tells why.
		if ( '' !== $first_id && method_exists( $ajax_handler, 'add_error' ) ) {
			$ajax_handler->add_error( $first_id, Activelead::blocked_message() );
		}
		if ( method_exists( $ajax_handler, 'add_error_message' ) ) {
			$ajax_handler->add_error_message( Activelead::blocked_message() );
		}
	}

	/**
	 * Ninja Forms: `apply_filters( 'ninja_forms_submit_data', array $form_data )`; an entry in
	 * `$form_data['errors']['form']` stops the submission.
	 *
	 * @param array<string, mixed> $form_data Submission: id, fields (id => {key, value}).
	 * @return array<string, mixed>
	 */
	public static function ninja_forms_submit_data( $form_data ) {
		if ( ! is_array( $form_data ) ) {
			return $form_data;
		}
		$pairs = array();
		foreach ( isset( $form_data['fields'] ) ? (array) $form_data['fields'] : array() as $id => $field ) {
			$name           = ! empty( $field['key'] ) ? (string) $field['key'] : 'field_' . ( isset( $field['id'] ) ? $field['id'] : $id );
			$pairs[ $name ] = isset( $field['value'] ) ? $field['value'] : '';
		}
		$result = self::run( 'ninjaforms', 'ninja-' . ( isset( $form_data['id'] ) ? (string) $form_data['id'] : '0' ), $pairs );
		if ( null !== $result && 'block' === $result['action'] ) {
			$form_data['errors']['form']['activelead'] = Activelead::blocked_message();
		}
		return $form_data;
	}

	/**
	 * Fluent Forms: `apply_filters( 'fluentform/validation_errors', array $errors, array $formData, object $form, array $fields )`.
	 *
	 * @param array<string, mixed> $errors    Errors so far.
	 * @param array<string, mixed> $form_data Field name => value.
	 * @param object               $form      The form, with id.
	 * @param array<mixed>         $fields    Field definitions.
	 * @return array<string, mixed>
	 */
	public static function fluentform_validation_errors( $errors, $form_data, $form = null, $fields = array() ) {
		unset( $fields );
		if ( ! empty( $errors ) || ! is_array( $form_data ) ) {
			return $errors;
		}
		$form_id = is_object( $form ) && isset( $form->id ) ? (string) $form->id : '0';
		$result  = self::run( 'fluentforms', 'fluentform-' . $form_id, $form_data );
		if ( null !== $result && 'block' === $result['action'] ) {
			$errors = (array) $errors;
			$errors['activelead'] = array( Activelead::blocked_message() );
		}
		return $errors;
	}

	/**
	 * Formidable: `apply_filters( 'frm_validate_entry', array $errors, array $values )`.
	 *
	 * @param array<string, string> $errors Errors so far.
	 * @param array<string, mixed>  $values Posted values: form_id, item_meta (field id => value).
	 * @return array<string, string>
	 */
	public static function formidable_validate_entry( $errors, $values ) {
		if ( ! empty( $errors ) || ! is_array( $values ) ) {
			return $errors;
		}
		$pairs = array();
		foreach ( isset( $values['item_meta'] ) ? (array) $values['item_meta'] : array() as $id => $value ) {
			$pairs[ 'field_' . $id ] = $value;
		}
		// Formidable's field names are numeric ids, so guess() finds the e-mail by value only.
		$result = self::run( 'formidable', 'formidable-' . ( isset( $values['form_id'] ) ? (string) $values['form_id'] : '0' ), $pairs );
		if ( null !== $result && 'block' === $result['action'] ) {
			$errors         = (array) $errors;
			$errors['spam'] = Activelead::blocked_message();
		}
		return $errors;
	}

	/**
	 * WooCommerce: `do_action( 'woocommerce_after_checkout_validation', array $data, WP_Error $errors )`.
	 *
	 * @param array<string, mixed> $data   Posted checkout data (billing_email, billing_first_name, ...).
	 * @param WP_Error             $errors Errors so far.
	 * @return void
	 */
	public static function woocommerce_checkout( $data, $errors ) {
		if ( ! is_array( $data ) || ! is_wp_error( $errors ) || $errors->has_errors() || ! Activelead_Settings::enabled( 'woocommerce' ) ) {
			return;
		}
		$name   = trim( ( isset( $data['billing_first_name'] ) ? $data['billing_first_name'] : '' ) . ' ' . ( isset( $data['billing_last_name'] ) ? $data['billing_last_name'] : '' ) );
		$fields = array();
		foreach ( array( 'billing_company', 'billing_country', 'billing_city', 'billing_phone', 'shipping_country', 'payment_method' ) as $key ) {
			if ( isset( $data[ $key ] ) && is_scalar( $data[ $key ] ) ) {
				$fields[ $key ] = (string) $data[ $key ];
			}
		}
		$result = Activelead::check(
			array(
				'form_id'     => 'woocommerce-checkout',
				'integration' => 'woocommerce',
				'email'       => isset( $data['billing_email'] ) ? (string) $data['billing_email'] : '',
				'name'        => $name,
				'content'     => isset( $data['order_comments'] ) ? (string) $data['order_comments'] : '',
				'fields'      => $fields,
			)
		);
		if ( 'block' === $result['action'] ) {
			$errors->add( 'activelead_blocked', esc_html( Activelead::blocked_message() ) );
		}
	}

	/**
	 * WooCommerce: `apply_filters( 'woocommerce_registration_errors', WP_Error $errors, string $username, string $email )`.
	 *
	 * @param WP_Error $errors   Errors so far.
	 * @param string   $username User name.
	 * @param string   $email    E-mail.
	 * @return WP_Error
	 */
	public static function woocommerce_registration( $errors, $username, $email ) {
		if ( ! is_wp_error( $errors ) || $errors->has_errors() || ! Activelead_Settings::enabled( 'woocommerce' ) ) {
			return $errors;
		}
		$result = Activelead::check(
			array(
				'form_id'     => 'woocommerce-register',
				'integration' => 'woocommerce',
				'email'       => (string) $email,
				'name'        => (string) $username,
			)
		);
		if ( 'block' === $result['action'] ) {
			$errors->add( 'activelead_blocked', esc_html( Activelead::blocked_message() ) );
		}
		return $errors;
	}

	/**
	 * One line for an entry note.
	 *
	 * @param array<string, mixed> $result Result of Activelead::check().
	 * @return string
	 */
	public static function note( array $result ) {
		/* translators: 1: decision, 2: score, 3: labels, 4: trace id. */
		return sprintf( __( 'Activelead: %1$s, score %2$d, labels: %3$s, trace %4$s', 'activelead' ), $result['decision'], $result['score'], implode( ', ', $result['labels'] ), $result['trace_id'] );
	}
}
